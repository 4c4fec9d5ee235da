//! A small located YAML tree for the desired-state files.
//!
//! serde-based YAML crates forget where a value came from once it is deserialized, but every
//! validation error must name the line and column of the offending value. So the files are read
//! with yaml-rust2's event parser into this tree, which keeps a location on every node, and the
//! typed checks in `desired` walk it. Building the tree is where input is bounded: size, nesting
//! depth, and the number of nodes including alias expansions ("billion laughs").

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Deeper nesting than this is refused (the format needs 4 levels).
pub const MAX_DEPTH: usize = 32;
/// At most this many nodes, counting every node an alias expands to.
pub const MAX_NODES: usize = 20_000;

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<&Marker> for Location {
    fn from(m: &Marker) -> Self {
        Location {
            line: m.line(),
            // yaml-rust2 counts columns from 0; editors and compilers count from 1.
            col: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Scalar {
        value: String,
        /// Plain (unquoted) scalars can mean null or numbers; quoted ones are always strings.
        plain: bool,
        at: Location,
    },
    Seq {
        items: Vec<Node>,
        at: Location,
    },
    Map {
        entries: Vec<(String, Location, Node)>,
        at: Location,
    },
}

impl Node {
    pub fn at(&self) -> Location {
        match self {
            Node::Scalar { at, .. } | Node::Seq { at, .. } | Node::Map { at, .. } => *at,
        }
    }

    /// `~`, `null` or nothing at all, written without quotes.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { value, plain: true, .. }
            if value.is_empty() || value == "~" || value == "null" || value == "Null" || value == "NULL")
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Node::Scalar { .. } if self.is_null() => "null",
            Node::Scalar { .. } => "a scalar",
            Node::Seq { .. } => "a list",
            Node::Map { .. } => "a mapping",
        }
    }

    fn count(&self) -> usize {
        match self {
            Node::Scalar { .. } => 1,
            Node::Seq { items, .. } => 1 + items.iter().map(Node::count).sum::<usize>(),
            Node::Map { entries, .. } => {
                1 + entries.iter().map(|(_, _, v)| 1 + v.count()).sum::<usize>()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub at: Location,
    pub message: String,
    /// For a syntax error after an unclosed `[` or `{`: where it was opened (the parser only
    /// notices further down, where it gives up).
    pub unclosed: Option<(Location, char)>,
}

impl YamlError {
    fn new(at: Location, message: impl Into<String>) -> Self {
        YamlError {
            at,
            message: message.into(),
            unclosed: None,
        }
    }
}

/// The innermost flow collection (`[` or `{`) still open at `upto`: quoted strings and
/// comments are skipped; a new line at column 1 ends any flow context's claim (a flow
/// collection that runs into the next top-level key is the usual mistake).
fn unclosed_flow(text: &str, upto: Location) -> Option<(Location, char)> {
    let mut stack: Vec<(Location, char)> = Vec::new();
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line_no > upto.line {
            break;
        }
        let mut chars = line.chars().enumerate().peekable();
        while let Some((col, c)) = chars.next() {
            if line_no == upto.line && col + 1 >= upto.col {
                break;
            }
            match quote {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '"' | '\'' => quote = Some(c),
                    '#' if prev.is_whitespace() => break,
                    '[' | '{' => stack.push((
                        Location {
                            line: line_no,
                            col: col + 1,
                        },
                        c,
                    )),
                    ']' | '}' => {
                        stack.pop();
                    }
                    _ => {}
                },
            }
            prev = c;
        }
        prev = ' ';
    }
    stack.pop()
}

enum Frame {
    Seq {
        items: Vec<Node>,
        at: Location,
        anchor: usize,
    },
    Map {
        entries: Vec<(String, Location, Node)>,
        pending_key: Option<(String, Location)>,
        at: Location,
        anchor: usize,
    },
}

/// Parses one YAML document into a located tree. `None` means the document is empty.
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(YamlError::new(
            Location { line: 1, col: 1 },
            format!(
                "file is {} bytes, over the {} byte limit for a desired-state file; split it or remove what is not needed",
                text.len(),
                MAX_FILE_BYTES
            ),
        ));
    }
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut nodes = 0usize;
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    loop {
        let (event, marker) = parser.next_token().map_err(|e| {
            let at: Location = e.marker().into();
            let mut err = YamlError::new(at, format!("YAML syntax error: {}", e.info()));
            err.unclosed = unclosed_flow(text, at).filter(|(open, _)| *open != at);
            err
        })?;
        let at = Location::from(&marker);
        let node = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError::new(
                        at,
                        "a desired-state file holds one YAML document; remove the second `---` document",
                    ));
                }
                continue;
            }
            Event::SequenceStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep(at));
                }
                stack.push(Frame::Seq {
                    items: Vec::new(),
                    at,
                    anchor,
                });
                continue;
            }
            Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep(at));
                }
                stack.push(Frame::Map {
                    entries: Vec::new(),
                    pending_key: None,
                    at,
                    anchor,
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { items, at, anchor }) => {
                    let node = Node::Seq { items, at };
                    remember(&mut anchors, anchor, &node);
                    node
                }
                _ => return Err(YamlError::new(at, "YAML syntax error: unbalanced sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    entries,
                    at,
                    anchor,
                    ..
                }) => {
                    // A block mapping's start marker sits after its first key; errors about
                    // the mapping as a whole read better at that first key.
                    let at = entries.first().map(|e| e.1).unwrap_or(at);
                    let node = Node::Map { entries, at };
                    remember(&mut anchors, anchor, &node);
                    node
                }
                _ => return Err(YamlError::new(at, "YAML syntax error: unbalanced mapping")),
            },
            Event::Scalar(value, style, anchor, _) => {
                // yaml-rust2 places a block scalar (`|`, `>`) where its content starts, which
                // for an empty one is the next key; the value is where its indicator is.
                let at = if matches!(style, TScalarStyle::Literal | TScalarStyle::Folded) {
                    block_indicator(text, at).unwrap_or(at)
                } else {
                    at
                };
                let node = Node::Scalar {
                    value,
                    plain: style == TScalarStyle::Plain,
                    at,
                };
                remember(&mut anchors, anchor, &node);
                node
            }
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    return Err(YamlError::new(at, "YAML alias refers to an unknown anchor"));
                };
                // Alias expansion is where "billion laughs" documents explode: count every
                // node the alias stands for against the budget, before copying anything.
                nodes += target.count();
                if nodes > MAX_NODES {
                    return Err(too_big(at));
                }
                relocate(target.clone(), at)
            }
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(too_big(at));
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let Node::Scalar { value, .. } = node else {
                        return Err(YamlError::new(
                            node.at(),
                            "mapping keys must be plain words, not lists or mappings",
                        ));
                    };
                    if let Some((_, first, _)) = entries.iter().find(|(k, _, _)| *k == value) {
                        return Err(YamlError::new(
                            at,
                            format!(
                                "duplicate key `{value}` (first at line {}); keep only one",
                                first.line
                            ),
                        ));
                    }
                    *pending_key = Some((value, at));
                }
                Some((key, key_at)) => entries.push((key, key_at, node)),
            },
        }
    }
    Ok(root)
}

/// The `|` or `>` before `at`, skipping the blanks, line breaks and chomping or indentation
/// indicators between them.
fn block_indicator(text: &str, at: Location) -> Option<Location> {
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i + 1 == at.line {
            offset += line
                .char_indices()
                .nth(at.col.saturating_sub(1))
                .map(|(o, _)| o)
                .unwrap_or(line.len());
            break;
        }
        offset += line.len();
    }
    let before = &text[..offset.min(text.len())];
    let (pos, ch) = before
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_whitespace() || *c == '+' || *c == '-' || c.is_ascii_digit()))?;
    if ch != '|' && ch != '>' {
        return None;
    }
    let line = before[..pos].matches('\n').count() + 1;
    let line_start = before[..pos].rfind('\n').map(|i| i + 1).unwrap_or(0);
    Some(Location {
        line,
        col: before[line_start..pos].chars().count() + 1,
    })
}

fn remember(anchors: &mut HashMap<usize, Node>, anchor: usize, node: &Node) {
    if anchor != 0 {
        anchors.insert(anchor, node.clone());
    }
}

/// An alias's copy is reported where the alias is written, not where the anchor was.
fn relocate(node: Node, at: Location) -> Node {
    match node {
        Node::Scalar { value, plain, .. } => Node::Scalar { value, plain, at },
        Node::Seq { items, .. } => Node::Seq { items, at },
        Node::Map { entries, .. } => Node::Map { entries, at },
    }
}

fn too_deep(at: Location) -> YamlError {
    YamlError::new(
        at,
        format!("nesting deeper than {MAX_DEPTH} levels; a desired-state file needs at most 4"),
    )
}

fn too_big(at: Location) -> YamlError {
    YamlError::new(
        at,
        format!(
            "document expands to more than {MAX_NODES} nodes (aliases included); remove the aliases that multiply it"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_one_based_lines_and_columns() {
        let node = parse("a: 1\nbb:\n  c: x\n").unwrap().unwrap();
        let Node::Map { entries, .. } = node else {
            panic!("not a map")
        };
        assert_eq!(entries[0].1, Location { line: 1, col: 1 });
        assert_eq!(entries[0].2.at(), Location { line: 1, col: 4 });
        let Node::Map { entries: inner, .. } = &entries[1].2 else {
            panic!("not a map")
        };
        assert_eq!(inner[0].1, Location { line: 3, col: 3 });
    }

    #[test]
    fn billion_laughs_is_refused_quickly() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&doc).unwrap_err();
        assert!(err.message.contains("expands to more than"), "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let doc = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let err = parse(&doc).unwrap_err();
        assert!(err.message.contains("nesting deeper"), "{err:?}");
    }

    #[test]
    fn small_aliases_are_expanded() {
        let node = parse("base: &b {x: 1}\ncopy: *b\n").unwrap().unwrap();
        let Node::Map { entries, .. } = node else {
            panic!()
        };
        assert!(matches!(&entries[1].2, Node::Map { entries, .. } if entries[0].0 == "x"));
    }
}
