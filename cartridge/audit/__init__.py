"""The audit log (docs/AUDIT.md): records, the RFC 6962 Merkle tree, proofs and checkpoints.

The standalone verifiers here need no archive: `tree_hash`, `verify_inclusion`,
`verify_consistency`, `verify_checkpoint`.
"""
from __future__ import annotations

from .checkpoint import Checkpoint, verify_checkpoint
from .merkle import EMPTY_ROOT, hash_leaf, hash_node, tree_hash, verify_consistency, verify_inclusion
from .record import AuditRecord, leaf_hash

__all__ = ["EMPTY_ROOT", "AuditRecord", "Checkpoint", "hash_leaf", "hash_node", "leaf_hash",
           "tree_hash", "verify_checkpoint", "verify_consistency", "verify_inclusion"]
