"""IAM policies for cartridge: the AWS IAM policy language and its evaluation (docs/IAM.md).

    from cartridge import iam
    policy = iam.Policy.parse({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "cart:GetObject", "Resource": "/home/${cart:username}/*"}]})
    iam.evaluate(policy, action="cart:GetObject", resource="/home/ann/a.txt", principal="ann")
    # -> Decision.ALLOW

Modules: policy (parse, validate, compile), actions (the known actions), resources (resource
patterns), patterns (wildcards), variables (`${...}`),
conditions (operators), values (canonical request values), evaluate (decisions and cache).
"""
from ..errors import PolicyError
from .actions import ACTIONS
from .evaluate import (
    Decision,
    Explanation,
    PolicySet,
    StatementRef,
    evaluate,
    policy_set,
    resource_path,
)
from .policy import VERSION_2008, VERSION_2012, Policy, Statement

__all__ = [
    "ACTIONS",
    "VERSION_2008",
    "VERSION_2012",
    "Decision",
    "Explanation",
    "Policy",
    "PolicyError",
    "PolicySet",
    "Statement",
    "StatementRef",
    "evaluate",
    "policy_set",
    "resource_path",
]
