//! `/v1/users`: the tenant's people, invitations within the seats, roles, removal.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledgersync_store::{StoreError, User};
use serde::Deserialize;

use super::auth::{Caller, Principal};
use super::extract::Body;
use super::problem::Problem;
use super::state::AppState;
use crate::access::{self, Role};

pub(crate) async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, Problem> {
    let users = state.store.users(&caller.tenant).await?;
    Ok(Json(
        serde_json::json!({ "seats": caller.tenant.seats, "users": users }),
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    #[schemars(email, length(max = 254))]
    email: String,
    role: Role,
}

pub(crate) async fn invite_user(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<InviteBody>,
) -> Result<Response, Problem> {
    let role = body.role;
    let invitation = access::invite(
        state.store.as_ref(),
        &state.mailer,
        &state.public_url,
        &caller.tenant,
        &body.email,
        role,
        &caller.actor(),
    )
    .await
    .map_err(|e| {
        if let Some(invalid) = e.downcast_ref::<access::NotAnEmail>() {
            return Problem::bad(format!("email: {invalid}"));
        }
        match e.downcast::<StoreError>() {
            Ok(store) => Problem::from(store),
            // What remains (the mailer, hashing) is the server's.
            Err(other) => Problem::internal(other),
        }
    })?;
    // The link is the secret: it goes to the invitee by mail, not back to the caller.
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "user": invitation.user, "expiresAt": invitation.expires_at, "mail": invitation.mail })),
    )
        .into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    role: Role,
}

pub(crate) async fn change_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<RoleBody>,
) -> Result<Json<User>, Problem> {
    let role = body.role;
    let user = state
        .store
        .set_user_role(&caller.tenant, &id, &role.to_string())
        .await?;
    state
        .store
        .audit(
            &caller.tenant.id,
            &caller.actor(),
            "user.role_changed",
            &format!("{} to {role}", user.email),
        )
        .await?;
    Ok(Json(user))
}

pub(crate) async fn remove_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    if matches!(&caller.principal, Principal::User { user, .. } if user.id == id) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "Admins cannot remove themselves.",
        ));
    }
    state.store.remove_user(&caller.tenant, &id).await?;
    state
        .store
        .audit(&caller.tenant.id, &caller.actor(), "user.removed", &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
