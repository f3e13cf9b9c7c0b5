"""Quality control of incoming scans (SPEC 1), as a service: one ``slide.scanned`` in, one
verdict out.

* ``qc.pipeline`` - what QC does with one scan file: open it, judge it (``quality``), build
  and write the LR pyramidal TIFF; plain functions, no Kafka, no S3
* ``qc.service``  - fetch the scan from the ingest bucket, run the pipeline in a thread, store
  the LR and the report, answer ``slide.qc_passed`` / ``slide.qc_failed``

The QC agent (``agents/qc.py``) is the thin Faust side of ``qc.service``.
"""
