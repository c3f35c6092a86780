//! The `Stripe-Account` header of the app and admin APIs: the connected account a request
//! acts in (as in Stripe's own API); no header is the platform account.

use actix_web::HttpRequest;

use crate::ops::InvalidRequest;
use crate::stripe::ids::AccountId;

pub const HEADER: &str = "Stripe-Account";

/// The account `req` names, parsed (`acct_…`), or `None` for the platform.
pub fn stripe_account(req: &HttpRequest) -> Result<Option<AccountId>, InvalidRequest> {
    let Some(value) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| InvalidRequest::new("Stripe-Account", "is not printable ASCII"))?;
    AccountId::parse(text.trim())
        .map(Some)
        .map_err(|e| InvalidRequest::new("Stripe-Account", format!("is not an acct_ id ({e})")))
}
