#!/usr/bin/env bash
# Give one receiver (GLN) a RabbitMQ user that can read its own inbox queue and nothing else.
#
#   RECEIVER_PASSWORD=... deploy/rabbitmq/add-receiver.sh [-p VHOST] [-n NAMESPACE] GLN USER
#   deploy/rabbitmq/add-receiver.sh [-p VHOST] [-n NAMESPACE] GLN USER < password-file
#
# The password comes from $RECEIVER_PASSWORD or standard input and is handed to rabbitmqctl on its standard
# input, never on a command line (where `ps` would show it). An existing user keeps its password; its
# permissions in VHOST are replaced. Run it where `rabbitmqctl` can reach the node (RABBITMQCTL overrides the
# command, e.g. "rabbitmqctl -n rabbit@rabbit1"). Permissions (see README.md in this folder):
#   configure ^$                            declare/delete nothing
#   write     ^$                            publish nowhere (not even the default exchange), bind nothing
#   read      ^<ns.>sammen\.inbox\.<GLN>$   consume (and get/purge) its own inbox only
#   topic permissions on <ns.>sammen.route: write ^$, read ^<GLN>\.
set -euo pipefail

vhost=/
ns=
usage() {
    echo "usage: [RECEIVER_PASSWORD=...] $0 [-p VHOST] [-n NAMESPACE] GLN USER" >&2
    exit 2
}
while getopts "p:n:h" opt; do
    case "$opt" in
        p) vhost=$OPTARG ;;
        n) ns=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || usage
gln=$1
user=$2

# GLN: 13 digits, GS1 mod-10 check digit (weights 1,3 from the left over the first 12 digits).
if ! [[ $gln =~ ^[0-9]{13}$ ]]; then
    echo "$0: GLN must be 13 digits" >&2
    exit 2
fi
sum=0
for i in $(seq 0 11); do
    d=${gln:$i:1}
    if ((i % 2 == 0)); then sum=$((sum + d)); else sum=$((sum + 3 * d)); fi
done
if (((10 - sum % 10) % 10 != ${gln:12:1})); then
    echo "$0: GLN $gln has a wrong check digit" >&2
    exit 2
fi
if ! [[ $user =~ ^[A-Za-z0-9._@-]{1,64}$ ]]; then
    echo "$0: USER may use A-Z a-z 0-9 . _ @ - (1-64 characters)" >&2
    exit 2
fi
if [ -n "$ns" ] && ! [[ $ns =~ ^[A-Za-z0-9_-]+$ ]]; then
    echo "$0: NAMESPACE may use A-Z a-z 0-9 _ -" >&2
    exit 2
fi

prefix=${ns:+$ns.}
# Dots escaped: the patterns are regular expressions.
esc_prefix=${prefix//./\\.}
queue_re="^${esc_prefix}sammen\\.inbox\\.${gln}\$"
route_exchange="${prefix}sammen.route"
ctl=${RABBITMQCTL:-rabbitmqctl}

if $ctl -q list_users | awk '{print $1}' | grep -qxF -- "$user"; then
    echo "user $user exists: password kept, permissions replaced"
else
    if [ -n "${RECEIVER_PASSWORD:-}" ]; then
        pw=$RECEIVER_PASSWORD
    else
        IFS= read -r pw || true
    fi
    if [ -z "$pw" ]; then
        echo "$0: no password (set RECEIVER_PASSWORD or pipe it on standard input)" >&2
        exit 2
    fi
    printf '%s\n' "$pw" | $ctl -q add_user "$user" >/dev/null
    unset pw
    echo "user $user created"
fi
$ctl -q set_permissions -p "$vhost" "$user" '^$' '^$' "$queue_re"
$ctl -q set_topic_permissions -p "$vhost" "$user" "$route_exchange" '^$' "^${gln}\\."
echo "vhost $vhost: $user may read ${prefix}sammen.inbox.$gln only (configure ^\$, write ^\$, read $queue_re)"
