#!/usr/bin/env bash
# The echo contract (SPEC.md) as a plain bash script for exec mode: the task arrives as
# JSON on stdin, the result leaves as JSON on stdout. Without jq, it reads flat configs
# with bash's own regular expressions, which is enough for the contract's fields.
set -euo pipefail
export LC_ALL=C.UTF-8   # so ${#payload} counts characters, not bytes

task=$(cat)
config=${task#*\"config\":}

if [[ $config =~ \"fail\":[[:space:]]*\"([^\"]*)\" ]]; then
  echo "${BASH_REMATCH[1]}" >&2
  exit 1
fi
i=null
if [[ $config =~ \"i\":[[:space:]]*(-?[0-9]+) ]]; then i=${BASH_REMATCH[1]}; fi
payload=""
if [[ $config =~ \"payload\":[[:space:]]*\"([^\"]*)\" ]]; then payload=${BASH_REMATCH[1]}; fi
if [[ $config =~ \"sleep_ms\":[[:space:]]*([0-9]+) ]]; then
  ms=${BASH_REMATCH[1]}
  sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
fi
echo "echo task ${FLOW_ELEMENT_JOB:-?} i=$i" >&2
printf '{"i": %s, "n": %d}\n' "$i" "${#payload}"
