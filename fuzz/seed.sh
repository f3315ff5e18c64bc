#!/usr/bin/env bash
# Seed each target's corpus with the real examples (and the conformance variants) of its family.
# Run from the repository root: bash fuzz/seed.sh. The committed corpora already include these seeds.
set -euo pipefail
ex=conformance/examples
inv=conformance/invalid
seed() { # target, files...
  local t=$1; shift
  mkdir -p "fuzz/corpus/$t"
  for f in "$@"; do [ -f "$f" ] && cp "$f" "fuzz/corpus/$t/seed-$(basename "$f")"; done
}
seed xml_tree $ex/*/*.xml
seed hospital_notification $ex/hospitalnotification/*.xml $inv/fhir/hn-*.xml
seed care_communication $ex/carecommunication/*.xml $ex/oioxml/Flow*CareCommunication*.xml $inv/fhir/cc-*.xml
seed acknowledgement $ex/acknowledgement/*.xml $ex/oioxml/Flow*Acknowledgement*.xml $inv/fhir/ack-*.xml
seed oioxml $ex/oioxml/Flow*-X*.xml $ex/oioxml-regionh/*_Payload.xml $ex/oioxml-regionh/*_VANS.xml $inv/oioxml/*.xml
seed vans $ex/oioxml-regionh/*_Payload.xml $inv/envelope/vans-*.xml
seed sbdh $ex/sbdh/*.xml $ex/oioxml-regionh/*SBDH.xml $ex/oioxml-regionh/*sbdh*.xml $ex/oioxml-regionh/receipt.xml $inv/envelope/sbdh-*.xml
# Payload mode of the envelope targets: a 0x00 byte, then the inner letter.
for f in $ex/oioxml-regionh/XDIS20_SBDH_Payload.xml $ex/oioxml-regionh/XDIS21_SBDH_Payload_VANS.xml $ex/hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml; do
  for t in vans sbdh; do { printf '\0'; cat "$f"; } > "fuzz/corpus/$t/payload-$(basename "$f")"; done
done
echo "seeded: $(ls fuzz/corpus | tr '\n' ' ')"
