# Sourced by the accuracy-against-weights-kept figure scripts (figure3_lenet5.sh, figure5_bilstm.sh):
#   run <name> <program> args...
# runs one program (nice $NICE, default 10), logs it to $RUNS/<name>.log, first line
# "== <name>: <command>" (scripts/plot_accuracy_vs_kept.py reads the setting from it), last line the
# wall time and the load average; with ONLY="name ..." set, runs only the names listed.
run() {
  local name=$1; shift
  [[ -n ${ONLY:-} && " $ONLY " != *" $name "* ]] && return 0
  echo "== $name: $*" | tee "$RUNS/$name.log"
  local t0=$SECONDS
  nice -n "${NICE:-10}" "$@" >>"$RUNS/$name.log" 2>&1
  echo "== $name: $((SECONDS - t0)) s, $(uptime | sed 's/.*load/load/')" | tee -a "$RUNS/$name.log"
}
