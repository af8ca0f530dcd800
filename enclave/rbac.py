"""Who may do what, as JupyterHub RBAC data: custom scopes, roles and the groups that carry them.

Enclave roles are JupyterHub groups (``admin``, ``holder``, ``operator``, ``reviewer``) that the authenticator
sets at every login from Enclave's accounts (``Authenticator.manage_groups``). JupyterHub does not
enforce custom scopes; the service that owns each one checks it.
"""

from __future__ import annotations

# The roles an account may hold (the groups above), and those a workspace member holds in one
# workspace. Kept here, free of imports, for the commands that offer them as choices.
ACCOUNT_ROLES = ("admin", "holder", "operator", "reviewer")
# A workspace's owner answers for it (any account); operators work in its sandboxes; reviewers
# decide on its export requests.
WORKSPACE_ROLES = ("operator", "reviewer", "owner")

# Services that hold these scopes' meaning.
EXPORTS_SERVICE = "exports"
AUDIT_SERVICE = "audit"
IDLE_CULLER_SERVICE = "idle-culler"
PROVISIONING_SERVICE = "provisioning"

CUSTOM_SCOPES: dict[str, dict] = {
    "custom:exports:request": {
        "description": "Submit export requests and see one's own requests and released files.",
    },
    "custom:exports:review": {
        "description": "Review export requests of the workspaces one reviews for.",
    },
    "custom:exports:admin": {
        "description": "Administer the export review service: policies, revocation, all downloads.",
    },
    "custom:workspaces:admin": {
        "description": "Provision accounts, sources and workspaces: members, releases asked for, limits,"
                       " guard and export policy, freezing and archiving.",
    },
    "custom:sources:consent": {
        "description": "Answer, as a data holder, the requests to attach releases of one's own sources to"
                       " workspaces, seeing each workspace's purpose.",
    },
    "custom:audit:read": {
        "description": "Read the audit log: every operation and transfer, and the assessment reports.",
    },
}

# Every user's baseline. JupyterHub's default 'user' role is 'self', which also grants
# 'users:shares' and 'tokens': sharing a sandbox and minting API tokens are not for operators.
USER_SCOPES = [
    "read:users!user",
    "users:activity!user",
    "servers!user",
    "access:servers!user",
    "read:tokens!user",
    f"access:services!service={EXPORTS_SERVICE}",
]

# A single-user server's own token ($JUPYTERHUB_API_TOKEN): report activity, accept the owner's
# browser, and submit exports on the owner's behalf — nothing else.
SERVER_TOKEN_SCOPES = [
    "users:activity!user",
    "access:servers!server",
    f"access:services!service={EXPORTS_SERVICE}",
    "custom:exports:request!user",
]

# Enclave's admin provisions accounts and workspaces and can stop sandboxes, but is not a
# JupyterHub admin: it holds no 'access:servers', so it cannot open an operator's sandbox.
ROLES: list[dict] = [
    {"name": "user", "description": "Every Enclave account.", "scopes": USER_SCOPES},
    {
        "name": "enclave-admin",
        "description": "Provisions accounts and workspaces; cannot open sandboxes.",
        "groups": ["admin"],
        "scopes": [
            "admin-ui",
            "list:users",
            "read:users",
            "read:servers",
            "delete:servers",
            "list:groups",
            "read:groups",
            "custom:workspaces:admin",
            "custom:exports:admin",
            "custom:audit:read",
            f"access:services!service={AUDIT_SERVICE}",
            f"access:services!service={PROVISIONING_SERVICE}",
        ],
    },
    {
        "name": "enclave-holder",
        "description": "Holds data sources; consents (or not) to their releases' use in workspaces.",
        "groups": ["holder"],
        "scopes": ["custom:sources:consent", f"access:services!service={PROVISIONING_SERVICE}"],
    },
    {
        "name": "enclave-operator",
        "description": "Analyses released data in workspace sandboxes and requests exports.",
        "groups": ["operator"],
        "scopes": ["custom:exports:request!user"],
    },
    {
        "name": "enclave-reviewer",
        "description": "Reviews export requests of the workspaces they are a reviewer of.",
        "groups": ["reviewer"],
        # The audit service shows them the held egress budgets of the workspaces they review.
        "scopes": ["custom:exports:review", f"access:services!service={AUDIT_SERVICE}"],
    },
]


def idle_culler_role() -> dict:
    return {
        "name": "idle-culler",
        "description": "Stops idle sandboxes.",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": [IDLE_CULLER_SERVICE],
    }
