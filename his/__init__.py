"""Hospital information system adapter: HL7 v2 ADT over MLLP/TCP, and a JSON HTTP endpoint
for systems without HL7, both turning admissions and discharges into Kafka events."""
