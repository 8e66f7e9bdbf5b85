# bash-complete.sh: what bash offers to complete loopctl's last word, sourced by the shell suites that check
# the bash completion (test-completion.sh on the source tree, test-install.sh on the installed file).
# shellcheck shell=bash

# bash_complete BASH_COMPLETION COMPLETION LINE [COMMAND...]: the words offered for the last word of LINE,
# one a line, by a bash that sourced BASH_COMPLETION (bash-completion's main script; "" for none) and
# loopctl's COMPLETION; COMMAND, when given, runs that bash (a namespace of the suite's, say).
bash_complete() {
    local bash_completion=$1 completion=$2 line=$3
    shift 3
    # shellcheck disable=SC2016 # the script is bash's own, its expansions are meant for it
    LINE=$line "$@" bash --norc --noprofile -c '
        if [ -n "$0" ]; then source "$0" || exit 1; fi
        source "$1" || exit 1
        COMP_LINE=$LINE
        COMP_POINT=${#COMP_LINE}
        read -ra COMP_WORDS <<<"${COMP_LINE//=/ = }"
        [[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        complete -p loopctl >/dev/null || exit 1
        _loopctl loopctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
        printf "%s\n" "${COMPREPLY[@]}"' "$bash_completion" "$completion"
}
