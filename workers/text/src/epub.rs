pub fn parse(_: &[u8]) -> Result<crate::Document, crate::TextError> {
    Err(crate::TextError::Empty)
}
