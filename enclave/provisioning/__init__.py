"""Provisioning for admins and data holders: ``enclave apply`` (a declarative file), the
provisioning service (REST API and admin pages, hub-managed) and the lifecycle it enforces on
running sandboxes. All of them change accounts and workspaces only through the one service layer,
:mod:`enclave.accounts`, :mod:`enclave.workspaces` and :mod:`enclave.sources`."""
