//! The format checks behind [`Config::validate`](super::Config::validate): broker lists,
//! topic names, assignment strategies, CORS origins and log filters. Each returns what is
//! wrong, for the caller to prefix with the key and value.

pub(super) fn brokers_problem(brokers: &str) -> Option<String> {
    if brokers.trim().is_empty() {
        return Some("must list at least one host:port".to_string());
    }
    for entry in brokers.split(',').map(str::trim) {
        // librdkafka accepts an optional protocol prefix, e.g. SASL_SSL://host:9093.
        let hostport = entry.split_once("://").map_or(entry, |(_, rest)| rest);
        let port = if let Some(rest) = hostport.strip_prefix('[') {
            match rest.split_once(']') {
                Some((host, tail)) if !host.is_empty() => match tail {
                    "" => None,
                    _ => match tail.strip_prefix(':') {
                        Some(port) => Some(port),
                        None => return Some(format!("broker {entry:?} is not host:port")),
                    },
                },
                _ => return Some(format!("broker {entry:?} is not host:port")),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && !host.contains(':') => Some(port),
                Some(_) => return Some(format!("broker {entry:?} is not host:port")),
                None => None,
            }
        };
        if hostport.is_empty() || hostport.contains(char::is_whitespace) {
            return Some(format!("broker {entry:?} is not host:port"));
        }
        if let Some(port) = port {
            if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
                return Some(format!("broker {entry:?} has an invalid port {port:?}"));
            }
        }
    }
    None
}

pub(super) fn topic_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 249 {
        Some("is longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("is not a valid topic name")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("may only contain ASCII letters, digits, '.', '_' and '-'")
    } else {
        None
    }
}

pub(super) fn assignment_strategy_problem(strategy: &str) -> Option<String> {
    let parts: Vec<&str> = strategy.split(',').map(str::trim).collect();
    for part in &parts {
        if !matches!(*part, "range" | "roundrobin" | "cooperative-sticky") {
            return Some(format!(
                "unknown strategy {part:?}, expected range, roundrobin or cooperative-sticky"
            ));
        }
    }
    if parts.len() > 1 && parts.contains(&"cooperative-sticky") {
        return Some("cooperative-sticky cannot be combined with eager strategies".to_string());
    }
    None
}

pub(super) fn cors_origin_problem(origin: &str) -> Option<&'static str> {
    if origin == "*" {
        return None;
    }
    match scheme_host_problem(origin)? {
        NOT_HTTP => Some("must be \"*\" or start with http:// or https://"),
        _ => Some("must be scheme://host[:port] without a path or trailing slash"),
    }
}

/// [`scheme_host_problem`]'s answer for a URL of another scheme.
const NOT_HTTP: &str = "must start with http:// or https://";

/// Why `url` is not `http://host[:port]` or `https://host[:port]`, if it is not.
pub(super) fn scheme_host_problem(url: &str) -> Option<&'static str> {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Some(NOT_HTTP);
    };
    if rest.is_empty() || rest.contains(['/', '?', '#']) || rest.contains(char::is_whitespace) {
        return Some("must be scheme://host[:port] without a path");
    }
    None
}

pub(super) fn log_level_problem(level: &str) -> Option<String> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    if level.trim().is_empty() {
        return Some("must not be empty".to_string());
    }
    // EnvFilter reads a bare word as a target name, so "verbose" would parse and log
    // nothing useful; require a level or target=level for each directive.
    for directive in level.split(',').map(str::trim) {
        let word = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&word.to_ascii_lowercase().as_str()) {
            return Some(format!(
                "directive {directive:?} is not a level ({}) or target=level",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .err()
        .map(|e| e.to_string())
}
