// @generated automatically by Diesel CLI.

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        user_id -> Uuid,
        #[max_length = 100]
        service -> Varchar,
        #[max_length = 255]
        hashed_key -> Varchar,
        created_at -> Timestamptz,
        last_used -> Nullable<Timestamptz>,
        #[max_length = 16]
        key_prefix -> Nullable<Varchar>,
        expires_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    api_key_policies (key_id) {
        key_id -> Uuid,
        #[max_length = 200]
        name -> Nullable<Varchar>,
        metadata -> Nullable<Jsonb>,
        permissions -> Array<Text>,
        disabled_at -> Nullable<Timestamptz>,
        credits -> Nullable<Int8>,
        refill_amount -> Nullable<Int8>,
        #[max_length = 5]
        refill_interval -> Nullable<Varchar>,
        last_refill_at -> Nullable<Timestamptz>,
        rate_limits -> Jsonb,
        updated_at -> Timestamptz,
        credits_version -> Int8,
        credits_seq -> Int8,
    }
}

diesel::table! {
    api_key_usage (key_id, hour, outcome) {
        key_id -> Uuid,
        hour -> Timestamptz,
        #[max_length = 32]
        outcome -> Varchar,
        count -> Int8,
    }
}

diesel::table! {
    events (id) {
        id -> Uuid,
        user_id -> Nullable<Uuid>,
        #[max_length = 100]
        event_type -> Varchar,
        payload -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    media (id) {
        id -> Uuid,
        owner_id -> Nullable<Uuid>,
        #[max_length = 16]
        status -> Varchar,
        #[max_length = 255]
        content_type -> Nullable<Varchar>,
        size_bytes -> Nullable<Int8>,
        #[max_length = 64]
        sha256 -> Nullable<Varchar>,
        #[max_length = 255]
        file_name -> Varchar,
        #[max_length = 255]
        storage_key -> Varchar,
        created_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    sessions (id) {
        #[max_length = 64]
        id -> Varchar,
        user_id -> Nullable<Uuid>,
        data -> Jsonb,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        #[max_length = 255]
        email -> Nullable<Varchar>,
        #[max_length = 42]
        wallet_address -> Nullable<Varchar>,
        #[max_length = 50]
        passport_tier -> Varchar,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        metadata -> Jsonb,
        preferences -> Jsonb,
    }
}

diesel::joinable!(api_key_policies -> api_keys (key_id));
diesel::joinable!(api_key_usage -> api_keys (key_id));
diesel::joinable!(api_keys -> users (user_id));
diesel::joinable!(events -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    api_key_policies,
    api_key_usage,
    api_keys,
    events,
    media,
    sessions,
    users,
);
