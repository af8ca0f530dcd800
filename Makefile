# Enclave: the single entry point.
#   make demo   set everything up and start the hub with a seeded demo on http://127.0.0.1:8000
#   make test   set everything up and run the whole test suite
# Set-up is idempotent: a second run only checks.

PYTHON ?= python3
VENV := .venv
SANDBOX_ENV := .venv-sandbox
NODE_BIN := node_modules/.bin
export ENCLAVE_HOME ?= $(CURDIR)/var

.PHONY: demo test setup system-deps hub-env sandbox-env proxy test-deps docker images catalogues clean

demo: setup
	$(VENV)/bin/enclave demo

# The system's packages one after the other (apt holds a lock), then the environments and the
# images side by side: building the images is mostly waiting for downloads and writing layers.
test: system-deps test-deps docker
	$(MAKE) --no-print-directory -j2 --output-sync=target hub-env sandbox-env proxy images
	$(VENV)/bin/python -m pytest -p no:cacheprovider --durations=40 $(PYTEST_ARGS)

setup: system-deps hub-env sandbox-env proxy

# System packages: installed when missing and running as root, otherwise an exact instruction.
# fonts-noto-cjk: Chinese text in the operators' charts (matplotlib's fallback, see below).
SYSTEM_PACKAGES := bubblewrap e2fsprogs nodejs npm python3-venv fonts-noto-cjk
CJK_FONT := /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
system-deps:
	@missing=""; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	test -f $(CJK_FONT) || missing="$$missing fonts-noto-cjk"; \
	PATH="$$PATH:/usr/sbin:/sbin" command -v mkfs.ext4 >/dev/null || missing="$$missing e2fsprogs"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "Enclave needs:$$missing. Run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' || \
	  { echo "configurable-http-proxy needs Node.js >= 20 (found $$(node --version))."; exit 1; }

# The hub's environment: every requirements file except the sandbox's.
HUB_REQUIREMENTS := $(filter-out requirements/sandbox.txt,$(wildcard requirements/*.txt))
# requirements/no-deps/ holds packages whose own pins conflict with ours (pycanon pins
# typing_extensions exactly); they are installed without their dependencies.
NO_DEPS_REQUIREMENTS := $(wildcard requirements/no-deps/*.txt)
# Packages an earlier pin brought in that nothing needs now (pip keeps them when a pin changes):
# rfc3987-syntax and its lark came with jsonschema 4.25 and later, and build a grammar at import,
# seconds of every start of the hub and the review service.
HUB_DROPPED := rfc3987-syntax lark
$(VENV)/.installed: $(HUB_REQUIREMENTS) $(NO_DEPS_REQUIREMENTS) pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(foreach r,$(HUB_REQUIREMENTS),-r $(r))
	$(foreach r,$(NO_DEPS_REQUIREMENTS),$(VENV)/bin/pip install -q --no-deps -r $(r) &&) true
	$(VENV)/bin/pip install -q --no-deps -e .
	$(VENV)/bin/pip uninstall -q -y $(HUB_DROPPED) 2>/dev/null || true
	touch $@
hub-env: $(VENV)/.installed

# The operator's environment is separate from the hub's: sandboxes mount it read-only and it
# holds nothing of the hub side. Packages of our own are installed as copies, not editable.
SANDBOX_LOCAL_PACKAGES := $(wildcard extensions/*/pyproject.toml)
# Packages an earlier requirements/sandbox.txt brought in that nothing needs now: pip does not remove
# them when a pin changes, so an environment made before loses them here (unless an admin added
# one since: enclave-added.txt). rfc3987-syntax (and its lark) came with jsonschema 4.25 and later.
SANDBOX_DROPPED := rfc3987-syntax lark
$(SANDBOX_ENV)/.installed: requirements/sandbox.txt $(SANDBOX_LOCAL_PACKAGES) $(shell find extensions -name '*.py' -o -name '*.json' -o -name '*.ts' 2>/dev/null | grep -v node_modules)
	test -d $(SANDBOX_ENV) || $(PYTHON) -m venv $(SANDBOX_ENV)
	$(SANDBOX_ENV)/bin/pip install -q --upgrade pip
	$(SANDBOX_ENV)/bin/pip install -q -r requirements/sandbox.txt
	for pkg in $(SANDBOX_DROPPED); do \
	  added="^$$(echo $$pkg | sed 's/[-_.]/[-_.]/g')=="; \
	  if $(SANDBOX_ENV)/bin/pip show -q "$$pkg" >/dev/null 2>&1 \
	     && ! grep -qiE "$$added" $(SANDBOX_ENV)/enclave-added.txt 2>/dev/null; then \
	    $(SANDBOX_ENV)/bin/pip uninstall -q -y "$$pkg" || exit 1; \
	  fi; \
	done
	$(foreach pkg,$(SANDBOX_LOCAL_PACKAGES),$(SANDBOX_ENV)/bin/pip install -q --no-deps --force-reinstall ./$(dir $(pkg)) &&) true
	$(SANDBOX_ENV)/bin/pip check -q
	chmod -R go+rX $(SANDBOX_ENV)
	touch $@

# Charts in Chinese with no set-up by the operator: the sandbox policy points MATPLOTLIBRC at this
# file (requirements/sandbox-matplotlibrc: DejaVu Sans for Latin text, falling back to Noto Sans
# CJK SC for Chinese), and mounts the font cache built here at the place matplotlib looks for it,
# so a kernel's first chart does not scan every system font first. The cache is rebuilt when the system's fonts or the environment change.
SANDBOX_MATPLOTLIBRC := $(SANDBOX_ENV)/etc/matplotlibrc
SANDBOX_FONT_CACHE := $(SANDBOX_ENV)/share/enclave/matplotlib
FONT_DIRS := $(shell find /usr/share/fonts /usr/local/share/fonts -type d 2>/dev/null)
$(SANDBOX_MATPLOTLIBRC): requirements/sandbox-matplotlibrc
	install -D -m 0644 $< $@
$(SANDBOX_FONT_CACHE)/.built: $(SANDBOX_ENV)/.installed $(SANDBOX_MATPLOTLIBRC) $(FONT_DIRS)
	rm -rf $(SANDBOX_FONT_CACHE) && mkdir -p $(SANDBOX_FONT_CACHE)
	home=$$(mktemp -d) && env -i PATH=/usr/bin:/bin HOME=$$home MPLCONFIGDIR=$(CURDIR)/$(SANDBOX_FONT_CACHE) \
	  MATPLOTLIBRC=$(CURDIR)/$(SANDBOX_MATPLOTLIBRC) $(SANDBOX_ENV)/bin/python -I -c 'import matplotlib.font_manager as fm; fm.findfont("Noto Sans CJK SC", fallback_to_default=False)' \
	  && rm -rf $$home
	chmod -R go+rX $(SANDBOX_FONT_CACHE)
	touch $@
sandbox-env: $(SANDBOX_ENV)/.installed $(SANDBOX_FONT_CACHE)/.built

$(NODE_BIN)/configurable-http-proxy: package.json
	npm install --no-audit --no-fund --silent
	touch $@
proxy: $(NODE_BIN)/configurable-http-proxy

# Test-only system dependencies: Debian's chromium (browser tests) and a CJK font for it (pages in
# Chinese are checked as drawn), strace (the hostile-home fixture watches what trusted processes
# open) and PostgreSQL 15's server binaries (tests start their own throwaway cluster).
test-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	fc-list :lang=zh 2>/dev/null | grep -q . || missing="$$missing fonts-wqy-microhei"; \
	command -v strace >/dev/null || missing="$$missing strace"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "The tests need:$$missing. Run: sudo apt-get install -y$$missing"; exit 1; fi; \
	fi

# Docker, for the container deployment (docker-compose.yml) and the Docker sandbox backend's tests:
# Debian's engine and docker-compose 1.29, debootstrap for the local base image (images/base.sh).
# The daemon is started here when it is not running and nothing (systemd) starts it.
DOCKER_PACKAGES := docker.io docker-compose debootstrap
docker:
	@missing=""; \
	test -x /usr/bin/docker || missing="$$missing docker.io"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	PATH="$$PATH:/usr/sbin:/sbin" command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "Docker needs:$$missing. Run: sudo apt-get install -y$$missing"; exit 1; fi; \
	fi
	@if ! /usr/bin/docker info >/dev/null 2>&1; then \
	  if [ "$$(id -u)" != 0 ]; then echo "The Docker daemon is not running: start it (sudo dockerd)"; exit 1; fi; \
	  echo "starting dockerd (log: /var/log/dockerd.log)"; \
	  PATH="$$PATH:/usr/sbin:/sbin" setsid nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null & \
	  for i in $$(seq 60); do /usr/bin/docker info >/dev/null 2>&1 && break; sleep 1; done; \
	  /usr/bin/docker info >/dev/null 2>&1 || { tail -n 20 /var/log/dockerd.log; exit 1; }; \
	fi

# Enclave's images (images/build.sh: reuses cached layers, prints their sizes).
images: docker
	images/build.sh

# Translations: extract the texts babel.cfg covers into enclave/locale/enclave.pot (generated, not
# kept) and merge them into each locale's catalogue, enclave/locale/<locale>/LC_MESSAGES/enclave.po;
# then translate what is new or marked fuzzy there. The .po files are compiled when loaded
# (enclave/i18n.py says why): nothing to compile here. tests/test_catalogues.py checks them.
catalogues: hub-env
	$(VENV)/bin/pybabel extract -F babel.cfg --project=Enclave \
	  --msgid-bugs-address= --copyright-holder= -o enclave/locale/enclave.pot .
	$(VENV)/bin/pybabel update -i enclave/locale/enclave.pot -d enclave/locale -D enclave --no-wrap --ignore-obsolete

clean:
	rm -rf $(VENV) $(SANDBOX_ENV) node_modules
