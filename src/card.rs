//! The `.card` container. TO BE WRITTEN (helper).
