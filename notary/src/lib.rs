//! DLog notary (being written).
