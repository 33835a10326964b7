//! Requests per second per principal: a token bucket each, refilled
//! continuously, a second's worth deep.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use tonic::Status;

pub struct PerPrincipal {
    per_second: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl PerPrincipal {
    pub fn new(per_second: u32) -> PerPrincipal {
        PerPrincipal {
            per_second: f64::from(per_second),
            buckets: Mutex::default(),
        }
    }

    pub fn take(&self, principal: &str) -> Result<(), Status> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = buckets
            .entry(principal.to_owned())
            .or_insert((self.per_second, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second)
            .min(self.per_second);
        *at = now;
        if *tokens < 1.0 {
            return Err(Status::resource_exhausted(format!(
                "principal `{principal}` made more than {} requests per second (limits.requests_per_second_per_principal); slow down or batch",
                self.per_second
            )));
        }
        *tokens -= 1.0;
        Ok(())
    }
}
