//! [`JsonObject`]: a JSON body that must be an object.
//!
//! serde lets a struct be written as a JSON array of its fields in order
//! (`["demo","Ann"]` would be a join); the API documents objects only, so
//! bodies are read as a JSON object first and then converted.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use chatty_protocol::ErrorCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::future::Future;
use std::pin::Pin;

use crate::error::ApiError;

/// A request body parsed from a JSON object into `T`.
#[derive(Debug)]
pub struct JsonObject<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonObject<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let object = web::Json::<Map<String, Value>>::from_request(req, payload);
        Box::pin(async move {
            let object = object.await?.into_inner();
            T::deserialize(Value::Object(object))
                .map(JsonObject)
                .map_err(|e| {
                    ApiError::client(
                        ErrorCode::MalformedJson,
                        format!("Malformed JSON body: {e}."),
                    )
                    .into()
                })
        })
    }
}
