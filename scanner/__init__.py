"""The scanner side of slidestream: what happens between a scanner writing a file and QC.

* ``scanner.ids``       - validate patient / exam / slide identifiers from outside
* ``scanner.ingest``    - upload an original scan to the ingest bucket, publish ``slide.scanned``
* ``scanner.watch``     - watch-folder adapter for scanners that can only write files
* ``scanner.pipeline``  - the QC agent's domain work: open the scan, build the LR, run QC
* ``scanner.cli``       - ``slidestream ingest`` and ``slidestream watch``
* ``scanner.demo``      - sample slides through scanner -> QC on the running stack
"""
