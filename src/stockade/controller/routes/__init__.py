"""The controller's HTTP routes, one `APIRouter` module per resource, mounted by `build_app`.

    objects    apply, delete, diff, rollback, list
    history    revisions, audit
    sync       snapshot, watch, agent status reports, flow ingest (what agents call)
    flows      flow queries
    tokens     create, list, revoke
    status     healthz, status, /metrics

Each module has one `router(...)` function taking exactly the parts it uses. A route
parses, calls one use case and maps its result; who may do what is decided in
`controller.rbac` and the service (the permission dependencies in `deps` only name the
permission a route needs).
"""
