pub fn parse(_: &str) -> Result<crate::Document, crate::TextError> {
    Err(crate::TextError::Empty)
}
