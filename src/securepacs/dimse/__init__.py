"""The only user of pynetdicom: the DICOM server, its handlers and status mapping."""
