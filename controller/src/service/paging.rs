//! Listings come in pages, so that no number or size of records can make one answer too
//! large to decode. A page token is the sort key of the last item returned
//! (`<unix ms>:<id>`); the next page starts strictly after it.

use tonic::Status;

/// Most items in one page.
pub const MAX_PAGE: usize = 1000;

/// The page size asked for: `default` for 0, at most [`MAX_PAGE`].
pub fn page_size(asked: u32, default: usize) -> usize {
    match asked as usize {
        0 => default,
        n => n.min(MAX_PAGE),
    }
}

/// The token naming an item by its sort key.
pub fn token(unix_ms: u64, id: &str) -> String {
    format!("{unix_ms}:{id}")
}

/// The sort key a token names (none for an empty token).
pub fn parse(token: &str) -> Result<Option<(u64, String)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Status::invalid_argument(format!("page token {token:?} is not valid"));
    let (ms, id) = token.split_once(':').ok_or_else(bad)?;
    Ok(Some((ms.parse().map_err(|_| bad())?, id.to_string())))
}

/// One page of `items` (already sorted by `key`) after `after`, and the next token.
/// `descending` says which way the items are sorted.
pub fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> (u64, &str),
    after: Option<(u64, String)>,
    size: usize,
    descending: bool,
) -> (Vec<T>, String) {
    let mut rest: Vec<T> = match &after {
        None => items,
        Some((ms, id)) => items
            .into_iter()
            .filter(|it| {
                let (m, i) = key(it);
                let k = (m, i);
                let a = (*ms, id.as_str());
                if descending { k < a } else { k > a }
            })
            .collect(),
    };
    let more = rest.len() > size;
    rest.truncate(size);
    let next = match (more, rest.last()) {
        (true, Some(last)) => {
            let (m, i) = key(last);
            token(m, i)
        }
        _ => String::new(),
    };
    (rest, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_everything_once_in_order() {
        let items: Vec<(u64, String)> = (0..2500u64).map(|i| (i / 3, format!("s{i:05}"))).collect();
        for descending in [false, true] {
            let mut sorted = items.clone();
            if descending {
                sorted.reverse();
            }
            let (mut seen, mut after) = (vec![], None);
            loop {
                let (p, next) = page(
                    sorted.clone(),
                    |x| (x.0, x.1.as_str()),
                    after,
                    700,
                    descending,
                );
                seen.extend(p);
                if next.is_empty() {
                    break;
                }
                after = parse(&next).unwrap();
            }
            assert_eq!(seen, sorted);
        }
        assert!(parse("nonsense").is_err());
        assert_eq!(page_size(0, 50), 50);
        assert_eq!(page_size(5000, 50), MAX_PAGE);
    }
}
