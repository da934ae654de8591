#!/bin/sh
# tests/no-check.sh - the only test when configure did not enable Check.
#
# The unit tests (tests/loom_tests) need the Check framework.  Rather than
# letting "make check" pass with nothing tested, fail with a hard error
# (exit 99) that says what is missing and how to get it.
if test "${LOOM_WITH_CHECK:-check}" = no; then
  reason="configure was run with --without-check"
  fix="re-run configure without --without-check"
else
  reason="configure did not find Check >= 0.10 (pkg-config module 'check')"
  fix="install Check, then re-run configure"
fi
message() {
  cat <<MSG

*** Loom's unit tests were not built: $reason.
*** To run them, $fix:
***     sudo apt-get install check      (or: ./scripts/install-deps)
***     ./configure ...                 (or: ./scripts/bootstrap)
***     make check
*** The library, examples and benchmarks build without Check.

MSG
}
# To the log (stderr), and to the terminal when make check gave us fd 9
# (AM_TESTS_FD_REDIRECT in Makefile.am).
message >&2
if { true >&9; } 2>/dev/null; then message >&9; fi
exit 99
