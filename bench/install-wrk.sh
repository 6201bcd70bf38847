#!/bin/sh
# Install wrk, the load generator `python -m bench` drives (Debian/Ubuntu, as root).
set -eu
apt-get update && apt-get install -y wrk
