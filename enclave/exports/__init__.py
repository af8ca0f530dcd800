"""Export review: the only way a file leaves a workspace.

A JupyterHub-managed service (:mod:`.app`) takes export requests from sandboxes over a unix socket,
runs the automated disclosure checks (:mod:`.checks`), lets reviewers vote file by file along one
transition table (:mod:`.workflow`), and releases approved files with a signed manifest
(:mod:`.release`, :mod:`.signing`). Its state is its own database (:mod:`.models`, Alembic
migrations) and a content-addressed store (:mod:`.store`) no sandbox can reach.
"""
