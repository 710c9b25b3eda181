#!/usr/bin/env bash
# steptime.sh: the compiler and linker launcher of tests/gpu/rehearse.sh's build. Runs one build
# step as it is and appends "<user s> <sys s> <wall s> <output>" to $LOOM_STEPTIME_LOG, so that
# budget.py can replay the build on the GPU machine's 16 cores from what each step costs alone,
# not from its wall time on this machine's shared cores.
out=-
args=("$@")
for ((i = 0; i + 1 < ${#args[@]}; i++)); do
  [[ ${args[i]} == -o ]] && out=${args[i + 1]}
done
t=$(mktemp /tmp/loom-steptime.XXXXXX)
/usr/bin/time -f "%U %S %e" -o "$t" "$@"
rc=$?
echo "$(tail -1 "$t") $out" >> "${LOOM_STEPTIME_LOG:-/dev/null}"
rm -f "$t"
exit $rc
