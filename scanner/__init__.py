"""The scanner side of slidestream: what happens between a scanner writing a file and QC.

* ``scanner.ids``       - validate patient / exam / slide identifiers from outside
* ``scanner.ingest``    - upload an original scan to the ingest bucket, publish ``slide.scanned``
* ``scanner.watch``     - watch-folder adapter for scanners that can only write files
* ``scanner.verdicts`` - wait for QC's verdicts on the broker (demo, bench, tests)
* ``scanner.outcome``  - the verdict, then the save's answer (``slidestream ingest --wait``)

QC itself is the ``qc`` package; ``slidestream ingest`` / ``watch`` are in
``slidestream.commands.scanner``.
"""
