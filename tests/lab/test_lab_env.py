"""Issue 13: a lab process's environment is built from an allow-list, so the operator's
STOCKADE_TOKEN (or any other credential in the environment of whoever ran `lab up`) does not
reach the controller or the agents. No root needed."""

from __future__ import annotations


def test_lab_process_env_drops_the_operators_token_and_credentials() -> None:
    from stockade.lab.supervisor import lab_process_env

    operator = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                "STOCKADE_TOKEN": "stk_" + "o" * 43, "STOCKADE_CONFIG": "/root/.config/stockade/config.json",
                "STOCKADE_CONTROLLER": "https://prod:8443", "AWS_SECRET_ACCESS_KEY": "hunter2",
                "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock"}
    env = lab_process_env(operator)
    assert not any(k.startswith("STOCKADE_") for k in env)
    assert "AWS_SECRET_ACCESS_KEY" not in env and "SSH_AUTH_SOCK" not in env
    assert "stk_" not in "".join(env.values())
    assert env["PATH"] == "/usr/bin:/bin" and env["PYTHONUNBUFFERED"] == "1"
    assert lab_process_env({})["PATH"]  # programs are still found without one
