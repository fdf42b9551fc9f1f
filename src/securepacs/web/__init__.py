"""HTTP(S) services of the server: enrolment now; viewer, admin and DICOMweb later."""
