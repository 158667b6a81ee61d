#!/usr/bin/env bash
# GPU machine, call 1 of 2 (carry .rtx_part1): park the first half of the bundle
# (scripts/rtx/bundle.sh) in /tmp, which survives only while the machine stays
# warm (~30 s), so call 2 must follow at once.
set -euo pipefail
mkdir -p /tmp/rtx_parts
cp .rtx_part1/bundle.part1 /tmp/rtx_parts/
ls -la /tmp/rtx_parts
