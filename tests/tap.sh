# tap.sh: the TAP output of the shell suites (test-install.sh, test-completion.sh), sourced by them: one
# test point per check, counted, and the plan and a summary at the end.
# shellcheck shell=bash
checks=0
failures=0

pass() {
    checks=$((checks + 1))
    echo "ok $checks - $*"
}
fail() {
    checks=$((checks + 1))
    failures=$((failures + 1))
    echo "not ok $checks - $*"
}
die() {
    echo "Bail out! $*"
    exit 1
}
# The plan, a summary line, and the exit status: 1 if a check failed.
tap_finish() {
    local script
    script=$(basename "$0")
    echo "1..$checks"
    if [ "$failures" -gt 0 ]; then
        echo "# $script: $failures of $checks checks failed"
        exit 1
    fi
    echo "# $script: all $checks checks passed"
    exit 0
}
