//! End-to-end suite (grows with the image and deploy issues).
