#!/usr/bin/env bash
# Installs the optional benchmark peers from Debian's packages: Postfix's
# smtp-sink (a discard-everything SMTP server) and smtp-source (a load
# generator), and Postfix itself, which the outbound bench (npm run
# bench:outbound) runs as a throw-away instance with its own configuration;
# and valgrind, which counts the server's instructions (npm run
# bench:instructions).
# Needs root (or sudo). The bench never runs this by itself.
#
#   sudo bash bench/install-peers.sh
#
# Postfix is installed with "No configuration", and its mail daemon is stopped
# and disabled afterwards: the system's Postfix is never used.
set -euo pipefail

SUDO=''
if [ "$(id -u)" -ne 0 ]; then SUDO='sudo'; fi

if ! command -v valgrind >/dev/null 2>&1; then
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind
fi

if command -v smtp-sink >/dev/null 2>&1 || [ -x /usr/sbin/smtp-sink ]; then
  echo "smtp-sink is already installed: $(command -v smtp-sink || echo /usr/sbin/smtp-sink)"
  exit 0
fi

echo 'postfix postfix/main_mailer_type select No configuration' | $SUDO debconf-set-selections
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix

# Do not leave a mail daemon running or starting at boot.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl stop postfix 2>/dev/null || true
else
  $SUDO service postfix stop 2>/dev/null || true
  $SUDO postfix stop 2>/dev/null || true
fi
# Both work without a running systemd (they only edit links).
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable postfix 2>/dev/null || true; fi
if command -v update-rc.d >/dev/null 2>&1; then $SUDO update-rc.d postfix disable 2>/dev/null || true; fi

for tool in smtp-sink smtp-source; do
  if [ -x "/usr/sbin/$tool" ]; then echo "installed: /usr/sbin/$tool"; else echo "missing after install: $tool" >&2; fi
done
