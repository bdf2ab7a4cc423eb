"""Proposed objects → the DesiredState the controller would store for them in a fresh store. Pure.

The same three steps as the controller's apply (`controller.service`), so a
proposal that passes here is one `stockade apply` accepts, and a bad one is
refused with the same object and field:

1. every document through `parse_object` (shape, unknown fields, selectors, ports);
2. addresses for workloads without `spec.ips`, by the controller's own IPAM
   (`model.ipam`, a pure module) with its default pools, in document order,
   as `stockade apply` of the same files on a fresh store assigns them;
3. `validate_state` over the whole state (namespaces, groups and tiers exist,
   addresses in range and unique).

Hosts are not checked: offline, nobody knows which hosts exist.
"""

from __future__ import annotations

from typing import Any, Sequence

from stockade.errors import ValidationError
from stockade.model.ipam import DEFAULT_IPV4_POOL, DEFAULT_IPV6_POOL, Pools, assign_addresses
from stockade.model.kinds import parse_documents
from stockade.model.state import DesiredState
from stockade.model.validation import ValidationSettings, validate_state

DEFAULT_POOLS = Pools(DEFAULT_IPV4_POOL, DEFAULT_IPV6_POOL)


def proposed_state(documents: Sequence[Any], pools: Pools = DEFAULT_POOLS,
                   settings: ValidationSettings = ValidationSettings(
                       pools=(DEFAULT_IPV4_POOL, DEFAULT_IPV6_POOL))) -> DesiredState:
    """The state `documents` make on their own (revision 0), or a ValidationError naming each problem."""
    if not documents:
        raise ValidationError.single("", "--objects", "no objects given")
    objects = parse_documents(list(documents))
    state = DesiredState.from_objects(0, assign_addresses(DesiredState(0), objects, pools))
    problems = validate_state(state, settings)
    if problems:
        raise ValidationError(problems)
    return state
