#!/bin/sh
# The guest agent of a Stockade lab VM: a line protocol on the control port (argument 1).
# Says "ready" when it starts; then, for each request "ID COMMAND ARGS...", one reply line
# "ID ok RESULT" or "ID err REASON". Requests are served one at a time, in order.
#   ID hello                                  -> ok stockade-guest 1
#   ID serve tcp|udp PORT                     -> ok PID      (listening when the reply is sent)
#   ID unserve tcp|udp PORT                   -> ok stopped | ok not-running
#   ID connect tcp|udp|icmp IP PORT MS [SRC]  -> ok VERDICT DETAIL   (probe_net's verdict)
#   ID addr add|del IP                        -> ok   (an extra /32 or /128 on eth0: a spoofed source)
#   ID addrs                                  -> ok IP IP ...   (global addresses of eth0)
# Words are checked before use; globbing is off, so no request word is expanded.
set -f
dev="$1"
exec 3<>"$dev"
reply() { echo "$*" >&3; }
is_port() { case "$1" in ''|*[!0-9]*) return 1 ;; esac; [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
is_ip() { case "$1" in ''|*[!0-9a-fA-F:.]*) return 1 ;; esac; return 0; }

serve() {  # $1 id, $2 proto, $3 port
    pidfile="/run/serve.$2.$3"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        reply "$1 err already serving $2/$3"; return
    fi
    out="/tmp/serve.$2.$3.out"
    : > "$out"
    /bin/probe_net serve "$2" "$3" > "$out" 2>&1 3>&- &
    echo $! > "$pidfile"
    n=0
    while [ $n -lt 250 ]; do
        grep -q '^READY' "$out" && { reply "$1 ok $(cat "$pidfile")"; return; }
        kill -0 "$(cat "$pidfile")" 2>/dev/null || break
        usleep 20000; n=$((n + 1))
    done
    kill "$(cat "$pidfile")" 2>/dev/null; rm -f "$pidfile"
    reply "$1 err server $2/$3 did not start: $(head -c 200 "$out" | tr '\n' ' ')"
}

unserve() {
    pidfile="/run/serve.$2.$3"
    if [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
        rm -f "$pidfile"; reply "$1 ok stopped"
    else
        rm -f "$pidfile"; reply "$1 ok not-running"
    fi
}

plen() { case "$1" in *:*) echo 128 ;; *) echo 32 ;; esac; }

reply "ready"
while read -r id cmd a b c d e rest <&3; do
    case "$id" in ''|*[!0-9]*) reply "0 err request id must be a number"; continue ;; esac
    case "$cmd" in
        hello) reply "$id ok stockade-guest 1" ;;
        serve|unserve)
            case "$a" in tcp|udp) ;; *) reply "$id err protocol must be tcp or udp"; continue ;; esac
            is_port "$b" || { reply "$id err bad port"; continue; }
            "$cmd" "$id" "$a" "$b" ;;
        connect)
            case "$a" in tcp|udp|icmp) ;; *) reply "$id err protocol must be tcp, udp or icmp"; continue ;; esac
            is_ip "$b" || { reply "$id err bad address"; continue; }
            is_port "$c" || [ "$c" = 0 ] || { reply "$id err bad port"; continue; }
            is_port "$d" || { reply "$id err bad timeout"; continue; }
            if [ -n "$e" ]; then
                is_ip "$e" || { reply "$id err bad source address"; continue; }
                result=$(/bin/probe_net connect "$a" "$b" "$c" "$d" "$e" 2>&1 3>&-)
            else
                result=$(/bin/probe_net connect "$a" "$b" "$c" "$d" 2>&1 3>&-)
            fi
            reply "$id ok $(echo "$result" | head -n 1)" ;;
        addr)
            is_ip "$b" || { reply "$id err bad address"; continue; }
            case "$a" in
                add) err=$(ip addr add "$b/$(plen "$b")" dev eth0 2>&1 3>&-) ;;
                del) err=$(ip addr del "$b/$(plen "$b")" dev eth0 2>&1 3>&-) ;;
                *) reply "$id err addr takes add or del"; continue ;;
            esac
            if [ -z "$err" ]; then reply "$id ok"; else reply "$id err $(echo "$err" | head -n 1)"; fi ;;
        addrs) reply "$id ok $(ip -o addr show dev eth0 scope global | awk '{print $4}' | tr '\n' ' ')" ;;
        *) reply "$id err unknown command ${cmd:-(none)}" ;;
    esac
done
