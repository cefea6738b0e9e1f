//! Calls to members' REST APIs, as patronictl makes them: the member's `api_url` with the
//! path replaced by the endpoint, a JSON body, basic auth from `ctl.authentication` (else
//! `restapi.authentication`), TLS from `ctl` (else `restapi`).

use anyhow::{Context, Result};
use pgherd_api::tls::{basic_authorization, endpoint_url, ClientTls};
use pgherd_config::Config;
use pgherd_dcs::Member;
use serde_json::Value;
use std::time::Duration;

/// Long enough for a switchover (`2 * max(10, loop_wait)` s of waiting on the server side)
/// or a restart.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

pub struct RestClient {
    http: reqwest::Client,
}

/// A member's answer: status and body text.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status < 400
    }

    /// The message: Patroni's plain text, or the `error` of a pgherd JSON refusal.
    pub fn message(&self) -> String {
        // Python's error page (Patroni's `send_error`): its status phrase.
        if self.body.contains("<h1>Error response</h1>") {
            if let Some((_, rest)) = self.body.split_once("<p>Message: ") {
                let phrase = rest.split_once(".</p>").map_or(rest, |(m, _)| m);
                return format!("{} {phrase}", self.status);
            }
        }
        match serde_json::from_str::<Value>(&self.body) {
            Ok(Value::Object(o)) => match o.get("error").and_then(Value::as_str) {
                Some(e) => e.to_string(),
                None => self.body.trim().to_string(),
            },
            _ => self.body.trim().to_string(),
        }
    }
}

impl RestClient {
    pub fn from_config(cfg: &Config, insecure: bool) -> Result<RestClient> {
        let mut tls = ClientTls::from_config(&cfg.ctl, &cfg.restapi);
        tls.insecure |= insecure;
        let auth = cfg
            .ctl
            .authentication
            .as_ref()
            .or(cfg.restapi.authentication.as_ref())
            .and_then(basic_authorization);
        let http = tls
            .http_client(auth.as_deref(), REQUEST_TIMEOUT)
            .context("REST client settings (ctl section)")?;
        Ok(RestClient { http })
    }

    /// `method` on `<scheme>://<host:port>/<endpoint>` of `member`.
    pub async fn call(
        &self,
        member: &Member,
        method: reqwest::Method,
        endpoint: &str,
        body: Option<&Value>,
    ) -> Result<Answer> {
        let url = endpoint_url(&member.data.api_url, endpoint)
            .with_context(|| format!("member {} has no usable api_url", member.name))?;
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url} (member {})", member.name))?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Ok(Answer { status, body })
    }

    pub async fn get_json(&self, member: &Member, endpoint: &str) -> Result<Value> {
        let answer = self
            .call(member, reqwest::Method::GET, endpoint, None)
            .await?;
        serde_json::from_str(&answer.body).with_context(|| {
            format!(
                "member {} answered non-JSON to GET /{endpoint}",
                member.name
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_messages() {
        let a = Answer {
            status: 412,
            body: r#"{"error": "leader name does not match"}"#.into(),
        };
        assert_eq!(a.message(), "leader name does not match");
        let a = Answer {
            status: 409,
            body: "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <body>\n        <h1>Error response</h1>\n        <p>Error code: 409</p>\n        <p>Message: Conflict.</p>\n    </body>\n</html>\n".into(),
        };
        assert_eq!(a.message(), "409 Conflict");
        let a = Answer {
            status: 200,
            body: "Successfully switched over to \"n\"".into(),
        };
        assert_eq!(a.message(), "Successfully switched over to \"n\"");
    }
}
