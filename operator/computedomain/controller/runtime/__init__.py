"""The controller process: Kopf's lifecycle, the lease, the work queue, the sweep and the CRD check."""
