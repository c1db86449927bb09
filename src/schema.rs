//! The `schema.ormdb` parser: turns the entity declarations that streamtally stores into
//! [`Schema`], and [`Schema::to_bundle`] turns that into the ormdb-core catalog bundle the
//! store applies at startup.
//!
//! The store reads field order, the `@id` field, defaults and the `@unique` upsert key from
//! here, so every rule it relies on (exactly one non-optional uuid `@id`, defaults that fit
//! their field's type, indexes that name real fields) is checked once, at parse time, and
//! every error carries the `file:line:column` of the token that broke it.
//!
//! The lexer and recursive-descent parser are hand-written: the grammar is a few lines and
//! a generator would cost more in build time and error quality than it saves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ormdb_core::catalog as orm;

/// The schema file's name, relative to the connector's working or config directory.
pub const SCHEMA_FILE: &str = "schema.ormdb";

/// The `file` reported in errors from [`Schema::parse`], which has no path.
const INPUT_NAME: &str = "<input>";

/// A field's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    Uuid,
    String,
    Json,
    Timestamp,
    Int32,
    Int64,
    Float64,
    Bool,
}

impl FieldType {
    /// Every type, in the order error messages list them.
    const ALL: [FieldType; 8] = [
        FieldType::Uuid,
        FieldType::String,
        FieldType::Json,
        FieldType::Timestamp,
        FieldType::Int32,
        FieldType::Int64,
        FieldType::Float64,
        FieldType::Bool,
    ];

    /// The type's name as written in `schema.ormdb`.
    pub fn name(&self) -> &'static str {
        match self {
            FieldType::Uuid => "uuid",
            FieldType::String => "string",
            FieldType::Json => "json",
            FieldType::Timestamp => "timestamp",
            FieldType::Int32 => "int32",
            FieldType::Int64 => "int64",
            FieldType::Float64 => "float64",
            FieldType::Bool => "bool",
        }
    }

    /// The ormdb-core scalar the field is stored as.
    pub fn scalar(&self) -> orm::ScalarType {
        match self {
            FieldType::Uuid => orm::ScalarType::Uuid,
            // ormdb-core has no JSON type: json is stored as text and validated on write.
            FieldType::String | FieldType::Json => orm::ScalarType::String,
            FieldType::Timestamp => orm::ScalarType::Timestamp,
            FieldType::Int32 => orm::ScalarType::Int32,
            FieldType::Int64 => orm::ScalarType::Int64,
            FieldType::Float64 => orm::ScalarType::Float64,
            FieldType::Bool => orm::ScalarType::Bool,
        }
    }

    fn from_name(name: &str) -> Option<FieldType> {
        FieldType::ALL.into_iter().find(|ty| ty.name() == name)
    }

    fn valid_names() -> String {
        let names: Vec<&str> = FieldType::ALL.iter().map(FieldType::name).collect();
        names.join(", ")
    }
}

/// A value the store fills in when a write leaves the field out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldDefault {
    /// `@default(uuid())`: a fresh random uuid.
    Uuid,
    /// `@default(now())`: the write's timestamp.
    Now,
}

/// One field of an entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    /// Declared with `?`: the field may be absent or null.
    pub optional: bool,
    /// Declared with `@id`: the entity's primary key.
    pub is_id: bool,
    pub default: Option<FieldDefault>,
}

/// A secondary index (`@index`) or upsert key (`@unique`), over fields in key order.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    pub fields: Vec<String>,
    pub unique: bool,
}

/// One `entity` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub name: String,
    /// In declaration order.
    pub fields: Vec<Field>,
    /// `@index` and `@unique` in declaration order.
    pub indexes: Vec<Index>,
    /// `@feed([..])`: fields whose values (before and after) each change-feed entry of this
    /// entity carries, so feed readers need not read the rows.
    pub feed: Vec<String>,
    /// `@postings([..])`: batch-granular indexes over these key fields (a trailing timestamp
    /// field is bucketed by the minute); each entry carries the `@feed` fields.
    pub postings: Vec<Vec<String>>,
    /// `@latest_only`: a write replaces the row's previous version instead of keeping it
    /// beside the new one (rows rewritten many times a second, such as rollups).
    pub latest_only: bool,
    /// `@blocks`: rows are kept in compressed columnar blocks (one Kafka partition and one
    /// `org_id` each) registered by `EventBlock` catalog rows, instead of one ORMDB row each.
    /// Such rows are inserted, updated and deleted through the store as before, but read only
    /// through the store's API, not ormdb-core's readers.
    pub blocks: bool,
}

impl Entity {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The position of the field called `name` in [`Entity::fields`].
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The `@id` field.
    ///
    /// # Panics
    ///
    /// If the entity has no `@id` field. [`Schema::parse`] rejects such entities, so this can
    /// only happen for an `Entity` assembled by hand; the store relies on the parse-time check
    /// rather than handling a case that a parsed schema cannot contain.
    pub fn id_field(&self) -> &Field {
        match self.fields.iter().find(|f| f.is_id) {
            Some(field) => field,
            None => panic!("entity '{}' has no @id field", self.name),
        }
    }

    /// The first `@unique` key: the fields the store derives the row id from, so that writing
    /// the same key twice updates one row.
    pub fn unique_key(&self) -> Option<&Index> {
        self.indexes.iter().find(|i| i.unique)
    }

    fn to_entity_def(&self) -> orm::EntityDef {
        let fields = self.fields.iter().map(|field| {
            let def = if field.optional {
                orm::FieldDef::optional(
                    &field.name,
                    orm::FieldType::OptionalScalar(field.ty.scalar()),
                )
            } else {
                orm::FieldDef::new(&field.name, orm::FieldType::Scalar(field.ty.scalar()))
            };
            let def = match field.default {
                Some(FieldDefault::Uuid) => def.with_default(orm::DefaultValue::AutoUuid),
                Some(FieldDefault::Now) => def.with_default(orm::DefaultValue::CurrentTimestamp),
                None => def,
            };
            // ormdb-core indexes single fields; the leading field of a composite index is the
            // one its lookups can use.
            let leads_index = self
                .indexes
                .iter()
                .map(|i| &i.fields)
                .chain(&self.postings)
                .any(|fields| fields.first() == Some(&field.name));
            if leads_index {
                def.with_index()
            } else {
                def
            }
        });
        orm::EntityDef::new(&self.name, &self.id_field().name).with_fields(fields)
    }
}

/// A parsed and validated `schema.ormdb`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// In declaration order.
    pub entities: Vec<Entity>,
}

impl Schema {
    /// Parses and validates schema source; errors name the file as `<input>`.
    pub fn parse(src: &str) -> Result<Schema, SchemaError> {
        parse_named(src, INPUT_NAME)
    }

    /// Reads and parses the schema file at `path`; errors name the path.
    pub fn load(path: &Path) -> Result<Schema, SchemaError> {
        let src = std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        parse_named(&src, &path.display().to_string())
    }

    /// The entity called `name`.
    pub fn entity(&self, name: &str) -> Option<&Entity> {
        self.entities.iter().find(|e| e.name == name)
    }

    /// The ormdb-core catalog bundle for this schema, with `@unique` keys as unique
    /// constraints. (`Catalog::apply_schema` renumbers `version` to the catalog's next one.)
    pub fn to_bundle(&self, version: u64) -> orm::SchemaBundle {
        let mut bundle = orm::SchemaBundle::new(version);
        for entity in &self.entities {
            bundle = bundle.with_entity(entity.to_entity_def());
            for index in entity.indexes.iter().filter(|i| i.unique) {
                let name = format!("{}_{}_unique", entity.name, index.fields.join("_"));
                let constraint = match index.fields.as_slice() {
                    [field] => orm::ConstraintDef::unique(name, &entity.name, field),
                    fields => orm::ConstraintDef::unique_composite(name, &entity.name, fields),
                };
                bundle = bundle.with_constraint(constraint);
            }
        }
        bundle
    }
}

/// Why a schema could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The source is malformed or breaks a rule; `line` and `column` are 1-based and point at
    /// the offending token (columns count characters).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read schema file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A 1-based source position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    column: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A syntax error before the file name is attached.
#[derive(Debug)]
struct ParseError {
    pos: Pos,
    message: String,
}

type ParseResult<T> = Result<T, ParseError>;

fn parse_named(src: &str, file: &str) -> Result<Schema, SchemaError> {
    Parser::new(src).schema().map_err(|e| SchemaError::Syntax {
        file: file.to_string(),
        line: e.pos.line,
        column: e.pos.column,
        message: e.message,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    At,
    Colon,
    Semi,
    Question,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    // Newlines are tokens because they end a field: without them `@index` on the line after
    // a field would read as one of that field's attributes.
    Newline,
    // A character the grammar never uses; the parser reports it as "found 'c'" where it
    // appears, so a stray character gets the same message shape as any other wrong token.
    Stray(char),
    Eof,
}

impl Tok {
    /// How the token reads in "found ..." messages.
    fn describe(&self) -> String {
        let punct = match self {
            Tok::Ident(name) => return format!("'{name}'"),
            Tok::Stray(c) => return format!("'{c}'"),
            Tok::Newline => return "end of line".to_string(),
            Tok::Eof => return "end of input".to_string(),
            Tok::At => "@",
            Tok::Colon => ":",
            Tok::Semi => ";",
            Tok::Question => "?",
            Tok::Comma => ",",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
        };
        format!("'{punct}'")
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: Pos,
}

/// Splits source into tokens, dropping spaces and `//` comments. It never fails: anything
/// unexpected becomes [`Tok::Stray`] for the parser to report in context.
fn tokenize(src: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = src.chars().peekable();
    let mut pos = Pos { line: 1, column: 1 };
    while let Some(c) = chars.next() {
        let start = pos;
        pos.column += 1;
        let tok = match c {
            '\n' => {
                pos = Pos {
                    line: pos.line + 1,
                    column: 1,
                };
                Tok::Newline
            }
            c if c.is_whitespace() => continue,
            '/' if chars.peek() == Some(&'/') => {
                while chars.next_if(|&c| c != '\n').is_some() {
                    pos.column += 1;
                }
                continue;
            }
            c if c == '_' || c.is_ascii_alphabetic() => {
                let mut name = String::from(c);
                while let Some(c) = chars.next_if(|&c| c == '_' || c.is_ascii_alphanumeric()) {
                    name.push(c);
                    pos.column += 1;
                }
                Tok::Ident(name)
            }
            '@' => Tok::At,
            ':' => Tok::Colon,
            ';' => Tok::Semi,
            '?' => Tok::Question,
            ',' => Tok::Comma,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            other => Tok::Stray(other),
        };
        tokens.push(Token { tok, pos: start });
    }
    tokens.push(Token { tok: Tok::Eof, pos });
    tokens
}

/// An index field name and where it was written, kept until the whole entity body is read
/// so that indexes may name fields declared after them.
struct IndexRef {
    attribute: &'static str,
    name: String,
    pos: Pos,
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
}

impl Parser {
    fn new(src: &str) -> Parser {
        Parser {
            tokens: tokenize(src),
            next: 0,
        }
    }

    fn peek(&self) -> &Token {
        // `tokenize` always ends with Eof and `bump` never moves past it.
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    /// Whether the token after the current one is the identifier `name`.
    fn next_is_ident(&self, name: &str) -> bool {
        matches!(self.tokens.get(self.next + 1), Some(Token { tok: Tok::Ident(i), .. }) if i == name)
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if token.tok != Tok::Eof {
            self.next += 1;
        }
        token
    }

    fn skip_newlines(&mut self) {
        while self.peek().tok == Tok::Newline {
            self.bump();
        }
    }

    /// An error at the next token: "expected {what}, found {token}".
    fn expected<T>(&self, what: &str) -> ParseResult<T> {
        let token = self.peek();
        Err(ParseError {
            pos: token.pos,
            message: format!("expected {what}, found {}", token.tok.describe()),
        })
    }

    fn expect(&mut self, tok: Tok, what: &str) -> ParseResult<Token> {
        if self.peek().tok == tok {
            Ok(self.bump())
        } else {
            self.expected(what)
        }
    }

    fn ident(&mut self, what: &str) -> ParseResult<(String, Pos)> {
        match self.peek().tok.clone() {
            Tok::Ident(name) => Ok((name, self.bump().pos)),
            _ => self.expected(what),
        }
    }

    /// `schema := { NEWLINE | entity } EOF`
    fn schema(&mut self) -> ParseResult<Schema> {
        let mut entities: Vec<Entity> = Vec::new();
        let mut declared: HashMap<String, Pos> = HashMap::new();
        loop {
            self.skip_newlines();
            match &self.peek().tok {
                Tok::Eof => return Ok(Schema { entities }),
                Tok::Ident(word) if word == "entity" => {
                    self.bump();
                }
                _ => return self.expected("'entity'"),
            }
            let (name, pos) = self.ident("an entity name after 'entity'")?;
            if let Some(first) = declared.get(&name) {
                return Err(ParseError {
                    pos,
                    message: format!("duplicate entity '{name}' (first declared at {first})"),
                });
            }
            declared.insert(name.clone(), pos);
            entities.push(self.entity_body(name, pos)?);
        }
    }

    /// `body := '{' { NEWLINE | ';' | field | entity_attribute } '}'`
    fn entity_body(&mut self, name: String, name_pos: Pos) -> ParseResult<Entity> {
        self.skip_newlines();
        let open = self
            .expect(Tok::LBrace, &format!("'{{' after entity name '{name}'"))?
            .pos;
        let mut fields: Vec<Field> = Vec::new();
        let mut indexes = Vec::new();
        let mut feed: Vec<String> = Vec::new();
        let mut postings: Vec<Vec<String>> = Vec::new();
        let mut latest_only = false;
        let mut blocks = false;
        let mut refs = Vec::new();
        loop {
            match self.peek().tok {
                Tok::Newline | Tok::Semi => {
                    self.bump();
                }
                Tok::RBrace => {
                    self.bump();
                    break;
                }
                Tok::Ident(_) => {
                    let field = self.field(&name, &fields)?;
                    fields.push(field);
                }
                Tok::At if self.next_is_ident("latest_only") || self.next_is_ident("blocks") => {
                    let at = self.bump().pos;
                    let is_blocks = matches!(self.bump().tok, Tok::Ident(ref f) if f == "blocks");
                    let (attribute, flag) = if is_blocks {
                        ("blocks", &mut blocks)
                    } else {
                        ("latest_only", &mut latest_only)
                    };
                    if *flag {
                        return Err(ParseError {
                            pos: at,
                            message: format!("entity '{name}' declares @{attribute} twice"),
                        });
                    }
                    *flag = true;
                }
                Tok::At => {
                    let at = self.peek().pos;
                    let (index, index_refs) = self.entity_attribute(&name)?;
                    if index_refs.first().is_some_and(|r| r.attribute == "feed") {
                        if !feed.is_empty() {
                            return Err(ParseError {
                                pos: at,
                                message: format!("entity '{name}' declares @feed twice"),
                            });
                        }
                        feed = index.fields;
                    } else if index_refs
                        .first()
                        .is_some_and(|r| r.attribute == "postings")
                    {
                        postings.push(index.fields);
                    } else {
                        indexes.push(index);
                    }
                    refs.extend(index_refs);
                }
                Tok::Eof => {
                    return self
                        .expected(&format!("'}}' to close entity '{name}' (opened at {open})"))
                }
                _ => {
                    return self.expected(&format!(
                        "a field, '@index', '@unique' or '}}' in entity '{name}'"
                    ))
                }
            }
        }
        for r in refs {
            if !fields.iter().any(|f| f.name == r.name) {
                return Err(ParseError {
                    pos: r.pos,
                    message: format!(
                        "@{} in entity '{name}' names unknown field '{}'",
                        r.attribute, r.name
                    ),
                });
            }
        }
        if !postings.is_empty() && feed.is_empty() {
            return Err(ParseError {
                pos: name_pos,
                message: format!(
                    "entity '{name}' declares @postings but no @feed: posting entries carry the @feed fields"
                ),
            });
        }
        if !fields.iter().any(|f| f.is_id) {
            return Err(ParseError {
                pos: name_pos,
                message: format!(
                    "entity '{name}' has no @id field: mark exactly one field with @id"
                ),
            });
        }
        Ok(Entity {
            name,
            fields,
            indexes,
            feed,
            postings,
            latest_only,
            blocks,
        })
    }

    /// `field := IDENT ':' TYPE ['?'] { field_attribute } (NEWLINE | ';' | '}')`
    ///
    /// `earlier` are the entity's fields declared so far, for the duplicate and `@id` checks.
    fn field(&mut self, entity: &str, earlier: &[Field]) -> ParseResult<Field> {
        let (name, name_pos) = self.ident("a field name")?;
        if earlier.iter().any(|f| f.name == name) {
            return Err(ParseError {
                pos: name_pos,
                message: format!("duplicate field '{name}' in entity '{entity}'"),
            });
        }
        self.expect(Tok::Colon, &format!("':' after field name '{name}'"))?;
        let (type_name, type_pos) = self.ident(&format!("a type after '{name}:'"))?;
        let ty = FieldType::from_name(&type_name).ok_or_else(|| ParseError {
            pos: type_pos,
            message: format!(
                "unknown type '{type_name}' for field '{name}', expected one of {}",
                FieldType::valid_names()
            ),
        })?;
        let optional = self.peek().tok == Tok::Question;
        if optional {
            self.bump();
        }
        let mut field = Field {
            name,
            ty,
            optional,
            is_id: false,
            default: None,
        };
        while self.peek().tok == Tok::At {
            self.field_attribute(entity, earlier, &mut field)?;
        }
        match self.peek().tok {
            Tok::Newline | Tok::Semi => {
                self.bump();
            }
            // Left for the body loop: '}' closes the entity, and at end of input the body
            // loop reports the missing '}'.
            Tok::RBrace | Tok::Eof => {}
            _ => {
                return self.expected(&format!(
                    "end of line, ';' or '}}' after field '{}'",
                    field.name
                ))
            }
        }
        Ok(field)
    }

    /// `field_attribute := '@id' | '@default' '(' ('uuid' | 'now') '(' ')' ')'`
    fn field_attribute(
        &mut self,
        entity: &str,
        earlier: &[Field],
        field: &mut Field,
    ) -> ParseResult<()> {
        let at = self.bump().pos;
        let (attribute, _) = self.ident("an attribute name after '@'")?;
        let fail = |message: String| Err(ParseError { pos: at, message });
        match attribute.as_str() {
            "id" => {
                if field.is_id {
                    return fail(format!("duplicate @id on field '{}'", field.name));
                }
                if let Some(other) = earlier.iter().find(|f| f.is_id) {
                    return fail(format!(
                        "entity '{entity}' has more than one @id field: '{}' and '{}'",
                        other.name, field.name
                    ));
                }
                if field.optional {
                    return fail(format!(
                        "@id field '{}' cannot be optional: remove the '?'",
                        field.name
                    ));
                }
                // Row ids in the store are uuids (a @unique key derives one from its values).
                if field.ty != FieldType::Uuid {
                    return fail(format!(
                        "@id field '{}' must have type uuid, found {}",
                        field.name,
                        field.ty.name()
                    ));
                }
                field.is_id = true;
            }
            "default" => {
                if field.default.is_some() {
                    return fail(format!("duplicate @default on field '{}'", field.name));
                }
                self.expect(Tok::LParen, "'(' after '@default'")?;
                let (function, function_pos) =
                    self.ident("'uuid()' or 'now()' inside '@default('")?;
                let (default, required) = match function.as_str() {
                    "uuid" => (FieldDefault::Uuid, FieldType::Uuid),
                    "now" => (FieldDefault::Now, FieldType::Timestamp),
                    _ => {
                        return Err(ParseError {
                            pos: function_pos,
                            message: format!(
                                "unknown default '{function}' for field '{}', expected 'uuid()' or 'now()'",
                                field.name
                            ),
                        })
                    }
                };
                self.expect(Tok::LParen, &format!("'(' after '{function}'"))?;
                self.expect(Tok::RParen, &format!("')' after '{function}('"))?;
                self.expect(Tok::RParen, &format!("')' to close '@default({function}()'"))?;
                if field.ty != required {
                    return fail(format!(
                        "@default({function}()) needs a {} field, but '{}' is {}",
                        required.name(),
                        field.name,
                        field.ty.name()
                    ));
                }
                field.default = Some(default);
            }
            "index" | "unique" | "feed" | "postings" => {
                return fail(format!(
                    "'@{attribute}' is an entity attribute and cannot follow field '{}': put it on its own line",
                    field.name
                ))
            }
            _ => {
                return fail(format!(
                    "unknown attribute '@{attribute}' on field '{}', expected @id or @default(...)",
                    field.name
                ))
            }
        }
        Ok(())
    }

    /// `entity_attribute := ('@index' | '@unique' | '@feed' | '@postings') '(' (IDENT | '[' IDENT { ',' IDENT } [','] ']') ')'`
    fn entity_attribute(&mut self, entity: &str) -> ParseResult<(Index, Vec<IndexRef>)> {
        let at = self.bump().pos;
        let (attribute, _) = self.ident("an attribute name after '@'")?;
        let (attribute, unique) = match attribute.as_str() {
            "index" => ("index", false),
            "unique" => ("unique", true),
            "feed" => ("feed", false),
            "postings" => ("postings", false),
            "id" | "default" => {
                return Err(ParseError {
                    pos: at,
                    message: format!(
                        "'@{attribute}' is a field attribute: put it after a field's type, on the same line"
                    ),
                })
            }
            _ => {
                return Err(ParseError {
                    pos: at,
                    message: format!(
                        "unknown attribute '@{attribute}' in entity '{entity}', expected @index(...), @unique(...), @feed(...), @postings(...), @latest_only or @blocks"
                    ),
                })
            }
        };
        self.expect(Tok::LParen, &format!("'(' after '@{attribute}'"))?;
        self.skip_newlines();
        let empty = |pos| ParseError {
            pos,
            message: format!("empty @{attribute} list: name at least one field"),
        };
        let mut refs = Vec::new();
        match self.peek().tok {
            Tok::Ident(_) => {
                let (name, pos) = self.ident("a field name")?;
                refs.push(IndexRef {
                    attribute,
                    name,
                    pos,
                });
            }
            Tok::RParen => return Err(empty(self.peek().pos)),
            Tok::LBracket => {
                let open = self.bump().pos;
                loop {
                    self.skip_newlines();
                    if self.peek().tok == Tok::RBracket {
                        if refs.is_empty() {
                            return Err(empty(open));
                        }
                        break;
                    }
                    let (name, pos) = self.ident(&format!("a field name in @{attribute}"))?;
                    if refs.iter().any(|r| r.name == name) {
                        return Err(ParseError {
                            pos,
                            message: format!("field '{name}' appears twice in @{attribute}"),
                        });
                    }
                    refs.push(IndexRef {
                        attribute,
                        name,
                        pos,
                    });
                    self.skip_newlines();
                    match self.peek().tok {
                        Tok::Comma => {
                            self.bump();
                        }
                        Tok::RBracket => break,
                        _ => return self.expected(&format!("',' or ']' in @{attribute} list")),
                    }
                }
                self.bump();
            }
            _ => return self.expected(&format!("a field name or '[' after '@{attribute}('")),
        }
        self.skip_newlines();
        self.expect(Tok::RParen, &format!("')' to close '@{attribute}('"))?;
        let index = Index {
            fields: refs.iter().map(|r| r.name.clone()).collect(),
            unique,
        };
        Ok((index, refs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = include_str!("../schema.ormdb");

    fn syntax_error(src: &str) -> (usize, usize, String) {
        match Schema::parse(src) {
            Err(SchemaError::Syntax {
                file,
                line,
                column,
                message,
            }) => {
                assert_eq!(file, "<input>");
                (line, column, message)
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn real_schema_parses_with_expected_entities() {
        let schema = Schema::parse(REAL).unwrap();
        let names: Vec<&str> = schema.entities.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Event",
                "EventBlock",
                "HourlyStats",
                "DailyStats",
                "RealtimeCounter",
                "Dashboard",
                "AlertRule",
                "AlertState",
                "AlertFiring",
                "AlertDelivery",
                "OrgSettings",
                "ConsumerOffset",
                "FeedCursor",
                "EventNameDaily",
                "RollupStatePart"
            ]
        );
        for entity in &schema.entities {
            let id = entity.id_field();
            assert_eq!(id.name, "id", "{}", entity.name);
            assert_eq!(id.ty, FieldType::Uuid);
        }
    }

    #[test]
    fn real_schema_event_fields_and_indexes() {
        let schema = Schema::parse(REAL).unwrap();
        let event = schema.entity("Event").unwrap();
        assert_eq!(event.fields.len(), 17);
        assert_eq!(
            event.fields[0],
            Field {
                name: "id".into(),
                ty: FieldType::Uuid,
                optional: false,
                is_id: true,
                default: Some(FieldDefault::Uuid),
            }
        );
        let properties = event.field("properties").unwrap();
        assert_eq!(
            (properties.ty, properties.optional),
            (FieldType::Json, true)
        );
        let ingested = event.field("ingested_at").unwrap();
        assert_eq!(ingested.default, Some(FieldDefault::Now));
        assert_eq!(event.field_index("timestamp"), Some(7));
        assert_eq!(event.field_index("nope"), None);
        assert!(event.indexes.is_empty());
        assert!(event.postings.is_empty());
        assert!(event.blocks);
        assert_eq!(event.unique_key(), None);
    }

    #[test]
    fn real_schema_unique_keys_in_declaration_order() {
        let schema = Schema::parse(REAL).unwrap();
        let hourly = schema.entity("HourlyStats").unwrap();
        assert_eq!(
            hourly.indexes,
            vec![
                Index {
                    fields: strings(&[
                        "org_id",
                        "date",
                        "hour",
                        "event_type",
                        "topic",
                        "partition"
                    ]),
                    unique: true
                },
                Index {
                    fields: strings(&["org_id", "date"]),
                    unique: false
                },
            ]
        );
        assert_eq!(hourly.unique_key(), Some(&hourly.indexes[0]));
        let cursor = schema.entity("FeedCursor").unwrap();
        assert_eq!(cursor.unique_key().unwrap().fields, strings(&["name"]));
        let counter = schema.entity("RealtimeCounter").unwrap();
        assert_eq!(counter.indexes[1].fields, strings(&["org_id"]));
    }

    #[test]
    fn bundle_is_accepted_by_the_catalog() {
        let schema = Schema::parse(REAL).unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let catalog = orm::Catalog::open(&db).unwrap();
        catalog.apply_schema(schema.to_bundle(1)).unwrap();

        let event = catalog.get_entity("Event").unwrap().unwrap();
        assert_eq!(event.identity_field, "id");
        assert_eq!(event.fields.len(), 17);
        let id = event.get_field("id").unwrap();
        assert_eq!(id.field_type, orm::FieldType::Scalar(orm::ScalarType::Uuid));
        assert_eq!(id.default, Some(orm::DefaultValue::AutoUuid));
        let properties = event.get_field("properties").unwrap();
        assert!(!properties.required);
        assert_eq!(
            properties.field_type,
            orm::FieldType::OptionalScalar(orm::ScalarType::String)
        );
        let ingested = event.get_field("ingested_at").unwrap();
        assert_eq!(ingested.default, Some(orm::DefaultValue::CurrentTimestamp));
        let indexed: Vec<&str> = event.indexed_fields().map(|f| f.name.as_str()).collect();
        assert!(indexed.is_empty(), "{indexed:?}");

        let mut listed = catalog.list_entities().unwrap();
        listed.sort();
        assert_eq!(listed.len(), 15);

        let constraints = catalog.constraints_for("HourlyStats").unwrap();
        assert_eq!(
            constraints,
            vec![orm::ConstraintDef::unique_composite(
                "HourlyStats_org_id_date_hour_event_type_topic_partition_unique",
                "HourlyStats",
                ["org_id", "date", "hour", "event_type", "topic", "partition"],
            )]
        );
        let constraints = catalog.constraints_for("FeedCursor").unwrap();
        assert_eq!(
            constraints,
            vec![orm::ConstraintDef::unique(
                "FeedCursor_name_unique",
                "FeedCursor",
                "name"
            )]
        );
        assert!(catalog.constraints_for("Event").unwrap().is_empty());
    }

    #[test]
    fn semicolons_comments_and_multiline_lists() {
        let src = "entity A { id: uuid @id; n: int32? ; @index(n) @unique([id, n]) }\n\
                   // comment\n\
                   entity B // trailing comment\n\
                   {\n\
                   \tid: uuid @id @default(uuid()) // why not\n\
                   \tat: timestamp @default(now())\n\
                   \t@index([\n\t  at,\n\t  id,\n\t])\n\
                   }";
        let schema = Schema::parse(src).unwrap();
        let a = schema.entity("A").unwrap();
        assert_eq!(a.fields.len(), 2);
        assert!(a.field("n").unwrap().optional);
        assert_eq!(a.indexes.len(), 2);
        let b = schema.entity("B").unwrap();
        assert_eq!(b.indexes[0].fields, strings(&["at", "id"]));
        assert_eq!(b.field("at").unwrap().default, Some(FieldDefault::Now));
    }

    #[test]
    fn all_types_parse() {
        let src = "entity T {\n id: uuid @id\n a: string\n b: json\n c: timestamp\n d: int32\n e: int64\n f: float64\n g: bool\n}";
        let schema = Schema::parse(src).unwrap();
        let types: Vec<FieldType> = schema.entities[0].fields.iter().map(|f| f.ty).collect();
        assert_eq!(types, FieldType::ALL);
        assert_eq!(FieldType::Json.scalar(), orm::ScalarType::String);
        assert_eq!(FieldType::Timestamp.scalar(), orm::ScalarType::Timestamp);
    }

    #[test]
    fn empty_source_is_an_empty_schema() {
        assert_eq!(Schema::parse("// nothing\n").unwrap().entities, vec![]);
    }

    #[test]
    fn error_unexpected_token() {
        let (line, column, message) = syntax_error("entity A {\n  id: uuid @id\n  org_id @id\n}");
        assert_eq!((line, column), (3, 10));
        assert_eq!(message, "expected ':' after field name 'org_id', found '@'");
    }

    #[test]
    fn error_unexpected_top_level_token() {
        let (line, column, message) = syntax_error("\n  model A {}");
        assert_eq!((line, column), (2, 3));
        assert_eq!(message, "expected 'entity', found 'model'");
    }

    #[test]
    fn error_stray_character() {
        let (line, column, message) = syntax_error("entity A {\n  id: uuid @id #\n}");
        assert_eq!((line, column), (2, 16));
        assert_eq!(
            message,
            "expected end of line, ';' or '}' after field 'id', found '#'"
        );
    }

    #[test]
    fn error_unexpected_eof() {
        let (line, column, message) = syntax_error("entity A {\n  id: uuid @id\n");
        assert_eq!((line, column), (3, 1));
        assert_eq!(
            message,
            "expected '}' to close entity 'A' (opened at 1:10), found end of input"
        );
        let (line, column, message) = syntax_error("entity A {\n  id:");
        assert_eq!((line, column), (2, 6));
        assert_eq!(message, "expected a type after 'id:', found end of input");
    }

    #[test]
    fn error_unknown_type() {
        let (line, column, message) = syntax_error("entity A {\n  id: uuid @id\n  name: text?\n}");
        assert_eq!((line, column), (3, 9));
        assert_eq!(
            message,
            "unknown type 'text' for field 'name', expected one of uuid, string, json, timestamp, int32, int64, float64, bool"
        );
    }

    #[test]
    fn error_unknown_field_attribute() {
        let (line, column, message) = syntax_error("entity A {\n  id: uuid @id @primary\n}");
        assert_eq!((line, column), (2, 16));
        assert_eq!(
            message,
            "unknown attribute '@primary' on field 'id', expected @id or @default(...)"
        );
    }

    #[test]
    fn error_unknown_entity_attribute() {
        let (line, column, message) = syntax_error("entity A {\n  id: uuid @id\n\n  @key([id])\n}");
        assert_eq!((line, column), (4, 3));
        assert_eq!(
            message,
            "unknown attribute '@key' in entity 'A', expected @index(...), @unique(...), @feed(...), @postings(...), @latest_only or @blocks"
        );
    }

    #[test]
    fn error_unknown_default_function() {
        let (line, column, message) =
            syntax_error("entity A {\n  id: uuid @id @default(random())\n}");
        assert_eq!((line, column), (2, 25));
        assert_eq!(
            message,
            "unknown default 'random' for field 'id', expected 'uuid()' or 'now()'"
        );
    }

    #[test]
    fn error_misplaced_attributes() {
        let (line, column, message) = syntax_error("entity A {\n  id: uuid @id @index(id)\n}");
        assert_eq!((line, column), (2, 16));
        assert_eq!(
            message,
            "'@index' is an entity attribute and cannot follow field 'id': put it on its own line"
        );
        let (line, column, message) = syntax_error("entity A {\n  id: uuid\n  @id\n}");
        assert_eq!((line, column), (3, 3));
        assert_eq!(
            message,
            "'@id' is a field attribute: put it after a field's type, on the same line"
        );
    }

    #[test]
    fn error_duplicate_field() {
        let (line, column, message) =
            syntax_error("entity A {\n  id: uuid @id\n  n: int32\n  n: int64\n}");
        assert_eq!((line, column), (4, 3));
        assert_eq!(message, "duplicate field 'n' in entity 'A'");
    }

    #[test]
    fn error_duplicate_entity() {
        let (line, column, message) =
            syntax_error("entity A { id: uuid @id }\n\nentity A { id: uuid @id }");
        assert_eq!((line, column), (3, 8));
        assert_eq!(message, "duplicate entity 'A' (first declared at 1:8)");
    }

    #[test]
    fn error_index_names_missing_field() {
        let (line, column, message) =
            syntax_error("entity A {\n  id: uuid @id\n  @index([id, org])\n}");
        assert_eq!((line, column), (3, 15));
        assert_eq!(message, "@index in entity 'A' names unknown field 'org'");
        let (line, column, message) = syntax_error("entity A {\n  id: uuid @id\n  @unique(org)\n}");
        assert_eq!((line, column), (3, 11));
        assert_eq!(message, "@unique in entity 'A' names unknown field 'org'");
    }

    #[test]
    fn index_may_name_a_later_field() {
        let schema =
            Schema::parse("entity A {\n  @index(n)\n  id: uuid @id\n  n: int32\n}").unwrap();
        assert_eq!(schema.entities[0].indexes[0].fields, strings(&["n"]));
    }

    #[test]
    fn error_duplicate_field_in_index() {
        let (line, column, message) =
            syntax_error("entity A {\n  id: uuid @id\n  @unique([id, id])\n}");
        assert_eq!((line, column), (3, 16));
        assert_eq!(message, "field 'id' appears twice in @unique");
    }

    #[test]
    fn error_missing_id() {
        let (line, column, message) =
            syntax_error("entity A {\n  n: int32\n}\nentity B { id: uuid @id }");
        assert_eq!((line, column), (1, 8));
        assert_eq!(
            message,
            "entity 'A' has no @id field: mark exactly one field with @id"
        );
    }

    #[test]
    fn error_more_than_one_id() {
        let (line, column, message) =
            syntax_error("entity A {\n  id: uuid @id\n  other: uuid @id\n}");
        assert_eq!((line, column), (3, 15));
        assert_eq!(
            message,
            "entity 'A' has more than one @id field: 'id' and 'other'"
        );
    }

    #[test]
    fn error_optional_id() {
        let (line, column, message) = syntax_error("entity A {\n  id: uuid? @id\n}");
        assert_eq!((line, column), (2, 13));
        assert_eq!(message, "@id field 'id' cannot be optional: remove the '?'");
    }

    #[test]
    fn error_non_uuid_id() {
        let (line, column, message) = syntax_error("entity A {\n  id: string @id\n}");
        assert_eq!((line, column), (2, 14));
        assert_eq!(message, "@id field 'id' must have type uuid, found string");
    }

    #[test]
    fn error_uuid_default_on_non_uuid_field() {
        let (line, column, message) =
            syntax_error("entity A {\n  id: uuid @id\n  key: string @default(uuid())\n}");
        assert_eq!((line, column), (3, 15));
        assert_eq!(
            message,
            "@default(uuid()) needs a uuid field, but 'key' is string"
        );
    }

    #[test]
    fn error_now_default_on_non_timestamp_field() {
        let (line, column, message) =
            syntax_error("entity A {\n  id: uuid @id\n  at: int64 @default(now())\n}");
        assert_eq!((line, column), (3, 13));
        assert_eq!(
            message,
            "@default(now()) needs a timestamp field, but 'at' is int64"
        );
    }

    #[test]
    fn latest_only_is_an_entity_flag_declared_once() {
        let s = Schema::parse(
            "entity A {\n  id: uuid @id\n  @latest_only\n}\nentity B {\n  id: uuid @id\n}",
        )
        .unwrap();
        assert!(s.entities[0].latest_only);
        assert!(!s.entities[1].latest_only);
        let (line, column, message) =
            syntax_error("entity A {\n  id: uuid @id\n  @latest_only\n  @latest_only\n}");
        assert_eq!((line, column), (4, 3));
        assert_eq!(message, "entity 'A' declares @latest_only twice");
    }

    #[test]
    fn postings_attribute_lists_fields_and_needs_a_feed() {
        let s = Schema::parse(
            "entity A {\n  id: uuid @id\n  n: int32\n  t: timestamp\n  @feed([n, t])\n  @postings([n, t])\n}",
        )
        .unwrap();
        assert_eq!(s.entities[0].postings, vec![strings(&["n", "t"])]);
        assert!(s.entities[0].indexes.is_empty());
        let (line, _, message) =
            syntax_error("entity A {\n  id: uuid @id\n  n: int32\n  @postings(n)\n}");
        assert_eq!(
            (line, message.as_str()),
            (
                1,
                "entity 'A' declares @postings but no @feed: posting entries carry the @feed fields"
            )
        );
        let (_, _, message) =
            syntax_error("entity A {\n  id: uuid @id\n  @feed(id)\n  @postings([x])\n}");
        assert_eq!(message, "@postings in entity 'A' names unknown field 'x'");
    }

    #[test]
    fn feed_attribute_lists_fields_and_is_checked() {
        let s = Schema::parse(
            "entity A {\n  id: uuid @id\n  n: int32\n  m: string?\n  @feed([n, m])\n}",
        )
        .unwrap();
        assert_eq!(s.entities[0].feed, strings(&["n", "m"]));
        assert!(s.entities[0].indexes.is_empty());
        let (line, _, message) =
            syntax_error("entity A {\n  id: uuid @id\n  @feed(id)\n  @feed(id)\n}");
        assert_eq!(
            (line, message.as_str()),
            (4, "entity 'A' declares @feed twice")
        );
        let (_, _, message) = syntax_error("entity A {\n  id: uuid @id\n  @feed([x])\n}");
        assert_eq!(message, "@feed in entity 'A' names unknown field 'x'");
        let real = Schema::parse(REAL).unwrap();
        assert_eq!(
            real.entity("Event").unwrap().feed,
            strings(&[
                "org_id",
                "timestamp",
                "event_type",
                "event_name",
                "user_id",
                "session_id",
                "topic",
                "partition"
            ])
        );
    }

    #[test]
    fn error_empty_index_list() {
        let (line, column, message) = syntax_error("entity A {\n  id: uuid @id\n  @index([])\n}");
        assert_eq!((line, column), (3, 10));
        assert_eq!(message, "empty @index list: name at least one field");
        let (line, column, message) = syntax_error("entity A {\n  id: uuid @id\n  @unique()\n}");
        assert_eq!((line, column), (3, 11));
        assert_eq!(message, "empty @unique list: name at least one field");
    }

    #[test]
    fn errors_display_file_line_and_column() {
        let err = Schema::parse("entity A {\n  id: uuid @id\n  org_id @id\n}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "<input>:3:10: expected ':' after field name 'org_id', found '@'"
        );
    }

    #[test]
    fn load_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SCHEMA_FILE);

        let err = Schema::load(&path).unwrap_err();
        assert!(matches!(err, SchemaError::Io { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read schema file {}: ", path.display())),
            "{err}"
        );

        std::fs::write(&path, "entity A {\n  id: uuid\n}\n").unwrap();
        let err = Schema::load(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:1:8: entity 'A' has no @id field: mark exactly one field with @id",
                path.display()
            )
        );

        std::fs::write(&path, REAL).unwrap();
        assert_eq!(Schema::load(&path).unwrap(), Schema::parse(REAL).unwrap());
    }
}
