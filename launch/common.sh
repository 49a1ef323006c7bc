# Shared by the launchers (sourced from the repository root).
# shellcheck shell=bash

# Prints a command as shell input: single quotes only where needed.
print_command() {
  local out=() a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=("$a")
    else
      out+=("'${a//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}
