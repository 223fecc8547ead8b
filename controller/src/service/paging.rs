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

/// A page from a catalog asked for `size + 1` items: the first `size`, and the token of
/// the last of them when there was more.
pub fn split<T>(
    mut items: Vec<T>,
    size: usize,
    key: impl Fn(&T) -> (u64, &str),
) -> (Vec<T>, String) {
    let more = items.len() > size;
    items.truncate(size);
    let next = match (more, items.last()) {
        (true, Some(last)) => {
            let (m, i) = key(last);
            token(m, i)
        }
        _ => String::new(),
    };
    (items, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog's keyset page, as the services ask for it (`size + 1` items after the
    /// token's key): walking the tokens covers everything once, in order.
    #[test]
    fn pages_cover_everything_once_in_order() {
        let items: Vec<(u64, String)> = (0..2500u64).map(|i| (i / 3, format!("s{i:05}"))).collect();
        let mut seen: Vec<(u64, String)> = vec![];
        let mut after: Option<(u64, String)> = None;
        loop {
            let asked: Vec<(u64, String)> = items
                .iter()
                .filter(|x| after.as_ref().is_none_or(|(m, i)| (x.0, &x.1) > (*m, i)))
                .take(701)
                .cloned()
                .collect();
            let (p, next) = split(asked, 700, |x| (x.0, x.1.as_str()));
            assert!(p.len() <= 700);
            seen.extend(p);
            if next.is_empty() {
                break;
            }
            after = parse(&next).unwrap();
        }
        assert_eq!(seen, items);
        assert!(parse("nonsense").is_err());
        assert_eq!(page_size(0, 50), 50);
        assert_eq!(page_size(5000, 50), MAX_PAGE);
    }
}
