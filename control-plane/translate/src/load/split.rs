//! Splitting a multi-document YAML stream into documents, keeping each
//! document's first line so errors can point at it.

/// One document of a stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RawDocument<'a> {
    /// 1-based index of the document in its file.
    pub index: usize,
    /// 1-based line where the document's text starts.
    pub line: usize,
    /// 1-based line of the document's first line of content.
    pub first_content_line: usize,
    /// The document's text.
    pub text: &'a str,
}

/// Splits on `---` document markers (and `...` end markers). Splitting before
/// parsing keeps a syntax error in one document from hiding the others.
pub(crate) fn documents(text: &str) -> Vec<RawDocument<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    let mut line_no = 0usize;
    /// Keeps a document that has content; `first_content_line` skips the
    /// comments before it, while `line` (where its text starts) maps parser
    /// positions back to the file.
    fn push<'a>(body: &'a str, line: usize, docs: &mut Vec<RawDocument<'a>>) {
        let content = |l: &str| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && !t.starts_with('%')
        };
        if let Some(skip) = body.lines().position(content) {
            docs.push(RawDocument { index: docs.len() + 1, line, first_content_line: line + skip, text: body });
        }
    }
    for line in text.split_inclusive('\n') {
        line_no += 1;
        let trimmed = line.trim_end();
        let is_marker = trimmed == "---"
            || trimmed.starts_with("--- ") && trimmed[4..].trim_start().starts_with('#')
            || trimmed == "...";
        if is_marker {
            push(&text[start..offset], start_line, &mut docs);
            start = offset + line.len();
            start_line = line_no + 1;
        }
        offset += line.len();
    }
    push(&text[start..], start_line, &mut docs);
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_numbers_documents() {
        let text = "# header\n---\na: 1\n---\n\n---  # c\nb: 2\n...\n";
        let docs = documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0].index, docs[0].line, docs[0].text), (1, 3, "a: 1\n"));
        assert_eq!((docs[1].index, docs[1].line, docs[1].text), (2, 7, "b: 2\n"));
    }

    #[test]
    fn a_single_document_without_markers() {
        let docs = documents("kind: Service\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].line, 1);
    }

    #[test]
    fn block_scalars_containing_dashes_are_not_markers() {
        let docs = documents("a: |\n  ---x\nb: 1\n");
        assert_eq!(docs.len(), 1);
    }
}
