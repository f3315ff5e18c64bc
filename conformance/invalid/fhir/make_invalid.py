#!/usr/bin/env python3
"""Regenerates conformance/invalid/fhir/*.xml and the invalid half of conformance/fhir.toml.

Each variant is a real MedCom example with ONE deliberate change (text substitution), so the expected
code is the rule that change breaks. Run from anywhere: python3 conformance/invalid/fhir/make_invalid.py
"""
import os, re

HERE = os.path.dirname(os.path.abspath(__file__))
CONF = os.path.dirname(os.path.dirname(HERE))
EX = "examples/"
HN_STIN = EX + "hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml"
HN_RE_STIN = EX + "hospitalnotification/Bundle-bfab3e80-9584-11ec-b909-0242ac120002.xml"
HN_AN_STIN = EX + "hospitalnotification/Bundle-c83671a4-9584-11ec-b909-0242ac120002.xml"
HN_STOR = EX + "hospitalnotification/Bundle-d3128d9b-cede-4c7f-8904-809eab322d7d.xml"
HN_SLHJ = EX + "hospitalnotification/Bundle-f4aa42a4-86db-4e68-9b38-9dda0dfd5774.xml"
HN_MORS = EX + "hospitalnotification/Bundle-g099bbf3-3fca-4722-a248-bfe1aa956410.xml"
HN_STAA = EX + "hospitalnotification/Bundle-h1c8e4a8-6b45-4669-94ad-2a99ad96bf03.xml"
CC_REF = EX + "carecommunication/Bundle-gfd00bc2-9c26-4174-934e-f6e4360845de.xml"
CC_NEW = EX + "carecommunication/Bundle-0d5b3c18-fab6-4d93-9d88-c9c8abf1f18c.xml"
CC_REPLY = EX + "carecommunication/Bundle-3dcb5618-3055-406a-9034-1b8fc8de0fea.xml"
CC_OTHER = EX + "oioxml/Flow1-CareCommunication_Ex_from_OIOXML.xml"
ACK_OK = EX + "acknowledgement/Bundle-a8c041b8-c65a-4fde-a90f-962076918834.xml"
ACK_FATAL = EX + "acknowledgement/Bundle-bc9535ef-ed94-4060-a928-7baddec7ee71.xml"
ACK_TRANSIENT = EX + "acknowledgement/Bundle-c9c2b2f6-0807-11ed-861d-0242ac120002.xml"
EMPTY = EX + "acknowledgement/Bundle-eb26be85-fdb7-454d-a980-95cba6d1745b.xml"


def read(src):
    with open(os.path.join(CONF, src), encoding="utf-8") as f:
        return f.read()


def sub(text, old, new, count=1, nth=None):
    """Replace `old` (must occur `count` times, or pick the nth occurrence)."""
    n = text.count(old)
    if nth is not None:
        assert n > nth, (old, n)
        i = -1
        for _ in range(nth + 1):
            i = text.index(old, i + 1)
        return text[:i] + new + text[i + len(old):]
    assert n == count, (old, n)
    return text.replace(old, new)


def rsub(text, pattern, new):
    out, n = re.subn(pattern, new, text, count=1, flags=re.S)
    assert n == 1, pattern
    return out


def entry_of(text, rtype, nth=0):
    """(start, end) of the nth `<entry>` whose resource is `rtype`."""
    found = [m for m in re.finditer(r"  <entry>.*?\n  </entry>\n", text, re.S)
             if re.search(r"<resource>\s*<%s>" % rtype, m.group(0))]
    assert len(found) > nth, (rtype, len(found))
    return found[nth].start(), found[nth].end()


def drop_entry(text, rtype, nth=0):
    s, e = entry_of(text, rtype, nth)
    return text[:s] + text[e:]


def in_entry(text, rtype, fn, nth=0):
    s, e = entry_of(text, rtype, nth)
    return text[:s] + fn(text[s:e]) + text[e:]


CASES = []


def case(name, src, change, expect, fn):
    CASES.append((name, src, change, expect, fn(read(src))))


# ---- generic messaging (on HospitalNotification STIN unless stated)
case("bundle-type-collection", HN_STIN, "Bundle.type message -> collection", ["fhir.bundle.type"],
     lambda t: sub(t, '<type value="message"/>', '<type value="collection"/>'))
case("bundle-id-missing", HN_STIN, "Bundle.id removed", ["fhir.cardinality.min"],
     lambda t: sub(t, '  <id value="a5e5b880-c087-4055-b9ec-99108695f81d"/>\n', ""))
case("entry0-not-messageheader", HN_STIN, "Patient entry moved before the MessageHeader entry", ["medcom-messaging-1"],
     lambda t: (lambda s, e: t[:t.index("  <entry>")] + t[s:e] + t[t.index("  <entry>"):s] + t[e:])(*entry_of(t, "Patient")))
case("no-provenance", HN_STIN, "the only Provenance entry removed", ["medcom-messaging-2"],
     lambda t: drop_entry(t, "Provenance"))
case("reference-unresolved", HN_STIN, "Encounter.serviceProvider points at an Organization not in the bundle", ["fhir.reference.unresolved"],
     lambda t: in_entry(t, "Encounter", lambda s: sub(s, "Organization/o7056980-a8b2-42aa-8a0e-c1fc85d1f40d", "Organization/00000000-0000-4000-8000-000000000000")))
case("narrative-missing-patient", HN_STIN, "Patient.text.div removed", ["fhir.narrative.missing"],
     lambda t: in_entry(t, "Patient", lambda s: rsub(s, r'<div xmlns="http://www.w3.org/1999/xhtml">.*?(\s*</text>)', r"\1")))
case("narrative-missing-header", HN_STIN, "MessageHeader.text removed", ["fhir.narrative.missing"],
     lambda t: in_entry(t, "MessageHeader", lambda s: rsub(s, r"\s*<text>.*?</text>", "")))
case("event-code-unknown", HN_STIN, "eventCoding code hospital-notification-message -> hospital-notification", ["fhir.valueset.event"],
     lambda t: sub(t, '<code value="hospital-notification-message"/>', '<code value="hospital-notification"/>'))
case("destination-use-unknown", HN_STIN, "destination use primary -> main", ["fhir.valueset.destination-use", "fhir.destination.primary"],
     lambda t: sub(t, '<code value="primary"/>', '<code value="main"/>'))
case("gln-check-digit", HN_STIN, "receiver GLN last digit 0 -> 1", ["id.gln.check-digit"],
     lambda t: sub(t, '<value value="5790001348120"/>', '<value value="5790001348121"/>'))
case("gln-length", HN_STIN, "sender GLN shortened to 12 digits", ["id.gln.length"],
     lambda t: sub(t, '<value value="5790000209354"/>', '<value value="579000020935"/>'))
case("gln-missing-sender", HN_STIN, "sender GLN identifier system changed to an unknown system", ["fhir.organization.gln"],
     lambda t: in_entry(t, "Organization", lambda s: sub(s, '<system value="https://www.gs1.org/gln"/>', '<system value="urn:oid:1.2.3"/>'), nth=1))
case("sor-missing-receiver", HN_STIN, "receiver SOR identifier removed", ["fhir.organization.sor"],
     lambda t: in_entry(t, "Organization", lambda s: rsub(s, r'\s*<identifier>\s*<system value="urn:oid:1.2.208.176.1.1"/>.*?</identifier>', ""), nth=0))
case("sor-format", HN_STIN, "sender SOR given a leading zero", ["id.sor.format"],
     lambda t: sub(t, '<value value="265161000016000"/>', '<value value="0265161000016000"/>'))
case("cpr-date", HN_STIN, "CPR day 25 -> 32", ["id.cpr.date"],
     lambda t: sub(t, '<value value="2509479989"/>', '<value value="3209479989"/>'))
case("cpr-format", HN_STIN, "CPR shortened to 9 digits", ["id.cpr.format"],
     lambda t: sub(t, '<value value="2509479989"/>', '<value value="250947998"/>'))
case("resource-id-missing", HN_STIN, "Encounter.id removed", ["fhir.resource.id"],
     lambda t: in_entry(t, "Encounter", lambda s: sub(s, '        <id value="a790f964-88d3-4652-bbc8-81d2f3d035f8"/>\n', "")))
case("doctype", HN_STIN, "DOCTYPE declaration added", ["xml.doctype-forbidden"],
     lambda t: sub(t, '<Bundle xmlns="http://hl7.org/fhir">', '<!DOCTYPE Bundle [<!ENTITY x "y">]>\n<Bundle xmlns="http://hl7.org/fhir">'))
case("entity-undefined", HN_STIN, "an undefined entity reference in Organization.name", ["xml.entity-undefined"],
     lambda t: sub(t, '<name value="Plejecenter Herlev"/>', '<name value="&herlev;"/>'))

# ---- HospitalNotification
case("hn-header-profile", HN_STIN, "MessageHeader.meta.profile -> base messaging header profile", ["medcom-hospitalNotification-1"],
     lambda t: sub(t, "http://medcomfhir.dk/ig/hospitalnotification/StructureDefinition/medcom-hospitalNotification-messageHeader\"", "http://medcomfhir.dk/ig/messaging/StructureDefinition/medcom-messaging-messageHeader\""))
case("hn-two-patients", HN_STIN, "a second Patient entry (new id) added", ["medcom-hospitalNotification-2"],
     lambda t: (lambda s, e: t[:e] + t[s:e].replace("t33cef33-3626-422b-955d-d506aaa65fe1", "b33cef33-3626-422b-955d-d506aaa65fe2") + t[e:])(*entry_of(t, "Patient")))
case("hn-activity-unknown", HN_STIN, "Provenance activity admit-inpatient -> admit-outpatient", ["medcom-hospitalNotification-3"],
     lambda t: sub(t, '<code value="admit-inpatient"/>', '<code value="admit-outpatient"/>'))
case("hn-activity-from-cc", HN_STIN, "Provenance activity admit-inpatient -> new-message (a CareCommunication activity)", ["medcom-hospitalNotification-3"],
     lambda t: sub(t, '<code value="admit-inpatient"/>', '<code value="new-message"/>'))
case("hn-ecpr", HN_STIN, "Patient identified by X-eCPR instead of CPR", ["medcom-hospitalNotification-4"],
     lambda t: sub(sub(t, '<system value="urn:oid:1.2.208.176.1.2"/>', '<system value="urn:oid:1.2.208.176.1.6.1.1"/>'), '<value value="2509479989"/>', '<value value="0703921VJ4"/>'))
case("hn-destination-cc", HN_STIN, "destination use primary -> cc", ["medcom-hospitalNotification-5"],
     lambda t: sub(t, '<code value="primary"/>', '<code value="cc"/>'))
case("hn-onleave-no-leave-period", HN_STOR, "leave-period extension removed from an onleave Encounter", ["medcom-hospitalNotification-6"],
     lambda t: rsub(t, r'\s*<extension url="[^"]*medcom-hospitalnotifiation-leave-period-extension">.*?</extension>', ""))
case("hn-status-mismatch", HN_STIN, "STIN Encounter.status in-progress -> entered-in-error", ["hn.encounter.status"],
     lambda t: sub(t, '<status value="in-progress"/>', '<status value="entered-in-error"/>'))
case("hn-status-mismatch-cancel", HN_AN_STIN, "AN_STIN Encounter.status entered-in-error -> in-progress", ["hn.encounter.status"],
     lambda t: sub(t, '<status value="entered-in-error"/>', '<status value="in-progress"/>'))
case("hn-status-unknown", HN_STIN, "Encounter.status in-progress -> planned", ["fhir.valueset.encounter-status"],
     lambda t: sub(t, '<status value="in-progress"/>', '<status value="planned"/>'))
case("hn-class-mismatch", HN_STIN, "STIN Encounter.class IMP -> EMER", ["hn.encounter.class"],
     lambda t: sub(t, '<code value="IMP"/>', '<code value="EMER"/>'))
case("hn-class-mismatch-staa", HN_STAA, "STAA Encounter.class EMER -> IMP", ["hn.encounter.class"],
     lambda t: sub(t, '<code value="EMER"/>', '<code value="IMP"/>'))
case("hn-class-unknown", HN_STIN, "Encounter.class IMP -> AMB", ["fhir.valueset.encounter-class"],
     lambda t: sub(t, '<code value="IMP"/>', '<code value="AMB"/>'))
for elem, xml in [
    ("type", '<type><text value="x"/></type>'),
    ("serviceType", '<serviceType><text value="x"/></serviceType>'),
    ("priority", '<priority><text value="x"/></priority>'),
    ("reasonCode", '<reasonCode><text value="x"/></reasonCode>'),
    ("diagnosis", '<diagnosis><condition><display value="x"/></condition></diagnosis>'),
    ("location", '<location><location><display value="x"/></location></location>'),
    ("hospitalization", '<hospitalization><dischargeDisposition><text value="x"/></dischargeDisposition></hospitalization>'),
    ("participant", '<participant><individual><display value="x"/></individual></participant>'),
    ("length", '<length><value value="2"/></length>'),
]:
    case("hn-prohibited-" + elem.lower(), HN_STIN, "Encounter." + elem + " added (0..0 in HospitalNotification)", ["fhir.element.prohibited"],
         lambda t, xml=xml: in_entry(t, "Encounter", lambda s: sub(s, "        <period>", "        " + xml + "\n        <period>")))
case("hn-episodeofcare-missing", HN_STIN, "Encounter.episodeOfCare removed", ["fhir.cardinality.min"],
     lambda t: rsub(t, r"\s*<episodeOfCare>.*?</episodeOfCare>", ""))
case("hn-period-start-missing", HN_STIN, "Encounter.period.start removed", ["fhir.cardinality.min"],
     lambda t: sub(t, '          <start value="2022-12-07T12:00:00+02:00"/>\n', ""))
case("hn-serviceprovider-missing", HN_STIN, "Encounter.serviceProvider removed", ["fhir.cardinality.min"],
     lambda t: in_entry(t, "Encounter", lambda s: rsub(s, r"\s*<serviceProvider>.*?</serviceProvider>", "")))
case("hn-focus-missing", HN_STIN, "MessageHeader.focus removed", ["fhir.cardinality.min"],
     lambda t: rsub(t, r"\s*<focus>.*?</focus>", ""))
case("hn-focus-not-encounter", HN_STIN, "MessageHeader.focus points at the Patient", ["hn.focus.type"],
     lambda t: sub(t, '<reference value="Encounter/a790f964-88d3-4652-bbc8-81d2f3d035f8"/>', '<reference value="Patient/t33cef33-3626-422b-955d-d506aaa65fe1"/>'))
case("hn-report-of-admission-on-leave", HN_STOR, "reportOfAdmissionFlag added to a start-leave message", ["hn.report-of-admission.not-allowed"],
     lambda t: in_entry(t, "MessageHeader", lambda s: sub(s, "        <eventCoding>", '        <extension url="http://medcomfhir.dk/ig/hospitalnotification/StructureDefinition/medcom-messaging-reportOfAdmissionExtension">\n          <valueBoolean value="true"/>\n        </extension>\n        <eventCoding>')))
case("hn-deceased-not-finished", HN_MORS, "MORS Encounter.status finished -> in-progress (Patient.deceased stays true)", ["hn.deceased.status"],
     lambda t: sub(t, '<status value="finished"/>', '<status value="in-progress"/>'))
case("hn-discharge-no-period-end", HN_SLHJ, "discharge Encounter.period.end removed", ["hn.encounter.period-end"],
     lambda t: rsub(t, r'\s*<end value="[^"]*"/>', ""))
case("hn-cancel-without-removal", HN_AN_STIN, "AN_STIN Provenance.entity.role removal -> revision", ["hn.provenance.entity-role"],
     lambda t: sub(t, '<role value="removal"/>', '<role value="revision"/>'))
case("hn-revise-without-revision", HN_RE_STIN, "RE_STIN Provenance.entity.role revision -> removal", ["hn.provenance.entity-role"],
     lambda t: sub(t, '<role value="revision"/>', '<role value="removal"/>'))
case("hn-no-current-provenance", HN_STIN, "Provenance.target points at another MessageHeader id", ["fhir.provenance.current"],
     lambda t: in_entry(t, "Provenance", lambda s: sub(s, "MessageHeader/b9b4818e-02de-4cc4-b418-d20cbc7b5404", "MessageHeader/00000000-0000-4000-8000-000000000001")))
case("hn-provenance-target-not-header", HN_RE_STIN, "history Provenance.target points at an Organization", ["hn.provenance.target"],
     lambda t: in_entry(t, "Provenance", lambda s: sub(s, '<target>\n          <reference value="MessageHeader/b9b4818e-02de-4cc4-b418-d20cbc7b5404"/>', '<target>\n          <reference value="Organization/b9b4818e-02de-4cc4-b418-d20cbc7b5404"/>'), nth=1))

# ---- CareCommunication
case("cc-priority-without-referral", CC_REF, "category regarding-referral -> carecoordination (priority kept)", ["medcom-careCommunication-5"],
     lambda t: sub(t, '<code value="regarding-referral"/>', '<code value="carecoordination"/>'))
case("cc-other-without-topic", CC_OTHER, "topic removed from a category 'other' message", ["medcom-careCommunication-6"],
     lambda t: rsub(t, r"\s*<topic>.*?</topic>", ""))
case("cc-category-unknown", CC_NEW, "category examination-results -> lab-results", ["fhir.valueset.category"],
     lambda t: sub(t, '<code value="examination-results"/>', '<code value="lab-results"/>'))
case("cc-identifier-not-urn-uuid", CC_NEW, "Communication.identifier without the urn:uuid: prefix", ["medcom-uuidv4"],
     lambda t: sub(t, '<value value="urn:uuid:cefe0dee-13b5-4bec-a843-09b4d58e4fe6"/>', '<value value="cefe0dee-13b5-4bec-a843-09b4d58e4fe6"/>'))
case("cc-activity-unknown", CC_NEW, "Provenance activity new-message -> retract-message (not allowed in CC 5)", ["fhir.valueset.activity"],
     lambda t: sub(t, '<code value="new-message"/>', '<code value="retract-message"/>'))
case("cc-definition-version", CC_NEW, "MessageHeader.definition version |5.0 -> |4.0", ["medcom-carecommunication-definition-url"],
     lambda t: sub(t, 'MedComCareCommunicationMessageDefinition|5.0"/>', 'MedComCareCommunicationMessageDefinition|4.0"/>'))
case("cc-definition-missing", CC_NEW, "MessageHeader.definition removed", ["medcom-carecommunication-definition-url"],
     lambda t: rsub(t, r'\s*<definition value="[^"]*"/>', ""))
case("cc-destination-cc", CC_NEW, "destination use primary -> cc", ["fhir.destination.cc-prohibited"],
     lambda t: sub(t, '<code value="primary"/>', '<code value="cc"/>'))
case("cc-header-profile", CC_NEW, "MessageHeader.meta.profile -> base messaging header profile", ["medcom-careCommunication-1"],
     lambda t: sub(t, "http://medcomfhir.dk/ig/carecommunication/StructureDefinition/medcom-careCommunication-messageHeader\"", "http://medcomfhir.dk/ig/messaging/StructureDefinition/medcom-messaging-messageHeader\""))
case("cc-patient-missing", CC_NEW, "Patient entry removed (and the subject reference with it)", ["medcom-careCommunication-2"],
     lambda t: rsub(drop_entry(t, "Patient"), r"\s*<subject>.*?</subject>", ""))
case("cc-provenance-profile", CC_NEW, "Provenance.meta.profile -> base messaging provenance", ["medcom-careCommunication-3"],
     lambda t: sub(t, "http://medcomfhir.dk/ig/carecommunication/StructureDefinition/medcom-careCommunication-provenance\"", "http://medcomfhir.dk/ig/messaging/StructureDefinition/medcom-messaging-provenance\""))
case("cc-practitioner-without-name", CC_NEW, "Practitioner.name removed", ["medcom-careCommunication-4", "medcom-careCommunication-8"],
     lambda t: in_entry(t, "Practitioner", lambda s: rsub(s, r"\s*<name>.*?</name>", "")))
case("cc-role-code-and-text", CC_NEW, "PractitionerRole.code given a text beside its coding", ["medcom-careCommunication-7"],
     lambda t: in_entry(t, "PractitionerRole", lambda s: rsub(s, r"(</coding>)(\s*</code>)", r'\1\n          <text value="x"/>\2')))
case("cc-encounter-without-episodeofcare", CC_REF, "Encounter.episodeOfCare removed", ["medcom-careCommunication-9"],
     lambda t: in_entry(t, "Encounter", lambda s: rsub(s, r"\s*<episodeOfCare>.*?</episodeOfCare>", "")))
case("cc-sender-other-organisation", CC_REF, "specific sender's PractitionerRole.organization -> the receiver organisation", ["medcom-careCommunication-11"],
     lambda t: in_entry(t, "PractitionerRole", lambda s: sub(s, "Organization/c39b114b-a9c1-46bb-ac30-e3ce71f28c3a", "Organization/33153a8a-97c8-4f55-b7ad-bbedee8bd0e1")))
case("cc-recipient-other-organisation", CC_REF, "recipient CareTeam.managingOrganization -> the sender organisation", ["medcom-careCommunication-12"],
     lambda t: in_entry(t, "CareTeam", lambda s: sub(s, "Organization/33153a8a-97c8-4f55-b7ad-bbedee8bd0e1", "Organization/c39b114b-a9c1-46bb-ac30-e3ce71f28c3a")))
case("cc-role-without-practitioner", CC_NEW, "PractitionerRole.practitioner removed", ["medcom-careCommunication-13"],
     lambda t: in_entry(t, "PractitionerRole", lambda s: rsub(s, r"\s*<practitioner>.*?</practitioner>", "")))
case("cc-entity-without-what", CC_NEW, "Provenance.entity.what emptied", ["medcom-careCommunication-14"],
     lambda t: in_entry(t, "Provenance", lambda s: rsub(s, r"<what>.*?</what>", "<what><extension url=\"urn:x\"><valueString value=\"x\"/></extension></what>")))
case("cc-encounter-not-referenced", CC_REF, "Communication.encounter removed while the Encounter stays", ["medcom-careCommunication-15"],
     lambda t: in_entry(t, "Communication", lambda s: rsub(s, r"\s*<encounter>.*?</encounter>", "")))
case("cc-status-not-unknown", CC_NEW, "Communication.status unknown -> completed", ["fhir.value.fixed"],
     lambda t: in_entry(t, "Communication", lambda s: sub(s, '<status value="unknown"/>', '<status value="completed"/>')))
case("cc-payload-missing", CC_NEW, "the only Communication.payload removed", ["fhir.cardinality.min", "cc.payload.string"],
     lambda t: rsub(t, r"\s*<payload>.*?</payload>", ""))
case("cc-ecpr-format", CC_NEW, "X-eCPR without a letter", ["id.ecpr.format"],
     lambda t: sub(t, '<value value="0703921VJ4"/>', '<value value="0703921234"/>'))
case("cc-reply-history-unresolved", CC_REPLY, "Communication.subject points at a Patient not in the bundle", ["fhir.reference.unresolved"],
     lambda t: in_entry(t, "Communication", lambda s: rsub(s, r'(<subject>\s*<reference value=")Patient/[^"]*', r"\1Patient/00000000-0000-4000-8000-000000000002")))

# ---- Acknowledgement
case("ack-fatal-without-operationoutcome", ACK_FATAL, "fatal-error acknowledgement: response.details removed", ["medcom-acknowledgement-1"],
     lambda t: rsub(t, r"\s*<details>\s*<reference value=\"OperationOutcome/[^\"]*\"/>\s*</details>", ""))
case("ack-transient-operationoutcome-missing", ACK_TRANSIENT, "transient-error acknowledgement: OperationOutcome entry removed", ["medcom-acknowledgement-1", "fhir.reference.unresolved"],
     lambda t: drop_entry(t, "OperationOutcome"))
case("ack-header-profile", ACK_OK, "MessageHeader.meta.profile -> base messaging header profile", ["medcom-acknowledgement-2"],
     lambda t: sub(t, "http://medcomfhir.dk/ig/acknowledgement/StructureDefinition/medcom-messaging-acknowledgementHeader\"", "http://medcomfhir.dk/ig/messaging/StructureDefinition/medcom-messaging-messageHeader\""))
case("ack-response-code-unknown", ACK_OK, "response.code ok -> accepted", ["fhir.valueset.response-code"],
     lambda t: sub(t, '<code value="ok"/>', '<code value="accepted"/>'))
case("ack-response-identifier-missing", ACK_OK, "response.identifier removed", ["fhir.cardinality.min"],
     lambda t: rsub(t, r'\s*<identifier value="[^"]*"/>', ""))
case("ack-error-code-unknown", ACK_FATAL, "OperationOutcome details code -> MSG_UNKNOWN_PROBLEM", ["fhir.valueset.ack-error-code"],
     lambda t: sub(t, '<code value="MSG_VALUESET_VALUE_UNKNOWN"/>', '<code value="MSG_UNKNOWN_PROBLEM"/>'))
case("ack-own-activity", ACK_OK, "the acknowledgement's own Provenance activity acknowledgement -> new-message", ["fhir.valueset.activity"],
     lambda t: sub(t, '<code value="acknowledgement"/>', '<code value="new-message"/>'))
case("ack-destination-cc", ACK_OK, "destination use primary -> cc", ["fhir.destination.cc-prohibited"],
     lambda t: sub(t, '<code value="primary"/>', '<code value="cc"/>'))

# ---- empty-message (base rules)
case("empty-no-provenance", EMPTY, "the only Provenance entry removed", ["medcom-messaging-2"],
     lambda t: drop_entry(t, "Provenance"))
case("empty-two-primary", EMPTY, "a second primary destination added", ["fhir.destination.primary"],
     lambda t: rsub(t, r"(\s*<destination>.*?</destination>)", r"\1\1"))


def main():
    names = set()
    lines = []
    for name, src, change, expect, text in CASES:
        assert name not in names, name
        names.add(name)
        rel = "invalid/fhir/%s.xml" % name
        with open(os.path.join(CONF, rel), "w", encoding="utf-8") as f:
            f.write(text)
        lines += ["[[case]]", 'file = "%s"' % rel, "valid = false",
                  "expect = [%s]" % ", ".join('"%s"' % e for e in expect),
                  'derived_from = "%s"' % src, 'change = "%s"' % change.replace('"', "'"), ""]
    manifest = os.path.join(CONF, "fhir.toml")
    with open(manifest, encoding="utf-8") as f:
        head = f.read().split("# ---- invalid variants")[0].rstrip("\n")
    with open(manifest, "w", encoding="utf-8") as f:
        f.write(head + "\n\n# ---- invalid variants (generated by invalid/fhir/make_invalid.py)\n\n" + "\n".join(lines))
    print(len(CASES), "invalid cases")


main()
