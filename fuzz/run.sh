#!/usr/bin/env bash
# fuzz/run.sh — run every native Go fuzz target in the module, one at a time.
#
#   fuzz/run.sh                      every target, FUZZTIME (default 60s) each
#   FUZZTIME=10m fuzz/run.sh         longer runs; any go test -fuzztime value (30s, 5m, 100000x)
#   fuzz/run.sh FuzzTransmission     only targets whose name matches this regexp
#
# Other knobs: FUZZPARALLEL (workers per target; default: go's, GOMAXPROCS),
# FUZZMINIMIZETIME (default 10s: go's 60s stalls a short run while it
# minimizes each new input), GO (default go).
#
# Exit status: 0 all passed; 1 a target failed (or a package did not build);
# 2 nothing to run. A failing input is saved in
# <pkg>/testdata/fuzz/<FuzzName>/, where `go test ./<pkg>` replays it.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-60s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-10s}
filter=${1:-.}

parallel=()
[ -n "${FUZZPARALLEL:-}" ] && parallel=(-parallel "$FUZZPARALLEL")

pkgs=$("$GO" list ./...) || exit 2
failed=()
ran=0
for pkg in $pkgs; do
	# go test -list prints the matching names, then "ok <pkg> …"; a package
	# that does not build is a failure, not a package without targets.
	if ! list=$("$GO" test -list '^Fuzz' "$pkg" 2>&1); then
		printf '%s\n' "$list"
		failed+=("$pkg (go test -list failed)")
		continue
	fi
	names=$(printf '%s\n' "$list" | grep '^Fuzz' | grep -E -- "$filter" || true)
	for name in $names; do
		ran=$((ran + 1))
		echo "=== $pkg $name (fuzztime $FUZZTIME)"
		log=$(mktemp)
		start=$(date +%s)
		# -run '^$': no unit tests; -fuzz must match exactly one target.
		"$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" \
			-fuzzminimizetime "$FUZZMINIMIZETIME" "${parallel[@]}" "$pkg" 2>&1 | tee "$log"
		rc=${PIPESTATUS[0]}
		secs=$(($(date +%s) - start))
		# The last progress line holds the total: "fuzz: elapsed: 1m0s, execs: 123 (…/sec), …".
		execs=$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
		rm -f "$log"
		if [ "$rc" -ne 0 ]; then
			failed+=("$pkg $name")
			echo "--- FAIL $name: ${execs:-0} execs in ${secs}s; failing input saved under testdata/fuzz/$name/"
		else
			echo "--- ok   $name: ${execs:-0} execs in ${secs}s"
		fi
	done
done

if [ "$ran" -eq 0 ] && [ "${#failed[@]}" -eq 0 ]; then
	echo "fuzz/run.sh: no fuzz target matches '$filter'" >&2
	exit 2
fi
if [ "${#failed[@]}" -gt 0 ]; then
	echo "fuzz/run.sh: ran $ran targets; failed:"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
echo "fuzz/run.sh: all $ran targets passed"
