# JupyterHub configuration for Enclave. Everything comes from Enclave's settings
# ($ENCLAVE_HOME/enclave.toml and ENCLAVE_* variables); see README.md. Start with `enclave hub`.
from enclave.host_state import keep_private
from enclave.hub import configure
from enclave.settings import load_settings_or_exit

keep_private()  # what the hub and the processes it starts create is root's alone
configure(c, load_settings_or_exit())  # noqa: F821 (c is JupyterHub's config object)
