//! The one shape of cache the AWS layer keeps: what never changes once AWS has said it
//! (task definition revisions, service revisions), by key. The set in use moves on, so at `max`
//! entries the cache starts again rather than grow without bound: the next reader asks AWS once
//! more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Bounded<V> {
    map: Arc<Mutex<HashMap<String, V>>>,
    max: usize,
}

impl<V: Clone> Bounded<V> {
    pub fn new(max: usize) -> Bounded<V> {
        Bounded {
            map: Arc::default(),
            max,
        }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        self.lock().get(key).cloned()
    }

    /// Keeps `value` under every one of `keys` (one value known by several names), starting
    /// again first if they would not fit.
    pub fn insert(&self, keys: &[&str], value: V) {
        let mut map = self.lock();
        if map.len() + keys.len() > self.max {
            map.clear();
        }
        for k in keys {
            map.insert(k.to_string(), value.clone());
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, V>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_never_grows_past_its_bound_and_keeps_the_newest_under_every_name() {
        let cache = Bounded::new(10);
        for n in 0..100 {
            cache.insert(&[&format!("web:{n}"), &format!("arn/web:{n}")], n);
            assert!(cache.len() <= 10, "{} entries", cache.len());
        }
        assert_eq!(cache.get("web:99"), Some(99));
        assert_eq!(cache.get("arn/web:99"), Some(99));
        assert_eq!(cache.get("web:0"), None);
    }
}
