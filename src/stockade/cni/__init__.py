"""`stockade-cni`: a CNI 1.0 plugin that attaches a container to Stockade as a routed workload.

A container runtime (podman's CNI backend, containerd, CRI-O) runs it with the CNI environment
and the network's plugin configuration on stdin. ADD registers the container as a `Workload`
under the host's credential (marked `stockade.io/attached-by: stockade-cni`, addresses from the
controller's IPAM) and wires a veth the way the host's agent expects an attached workload
(`dataplane.attach`); DEL undoes both; CHECK verifies both; VERSION names the spec versions.

    spec          the protocol: versions, error codes and JSON, the result document
    config        the plugin configuration on stdin and the CNI_* environment, checked
    identity      the Workload's name, namespace, labels, interface and MAC (pure)
    registration  the Workload at the controller (ControllerClient)
    wiring        the veth, addresses, routes and proxy ARP (rtnetlink, pyroute2)
    plugin        the four commands and the process entry point

Never imports the lab or the agent: it is what a runtime runs on a real host.
"""
