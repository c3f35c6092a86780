//! The configuration table as `clap` arguments: every variable is a flag with an `env`
//! fallback, so `--help` documents it, and the values clap collected become the loader's
//! [`Source`] (flags over environment; clap reads the environment for the listed names, the
//! loader for the names built at run time).

use std::collections::BTreeMap;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use payhook::config::vars::{self, Scope, Var};
use payhook::config::Source;

/// Values given as a flag or in the environment for one scope's variables.
#[derive(Debug, Clone, Default)]
pub struct VarFlags<const GLOBAL: bool> {
    values: BTreeMap<&'static str, String>,
}

/// `DATABASE_URL` and `RUST_LOG`: every command reads them.
pub type GlobalFlags = VarFlags<true>;
/// Everything else: `payhook serve`.
pub type ServeFlags = VarFlags<false>;

impl<const GLOBAL: bool> VarFlags<GLOBAL> {
    fn scope() -> Scope {
        if GLOBAL {
            Scope::Global
        } else {
            Scope::Serve
        }
    }

    fn vars() -> impl Iterator<Item = &'static Var> {
        vars::ALL.iter().filter(|v| v.scope == Self::scope())
    }

    /// The value of `var`, or its default; for variables with a plain default.
    pub fn value_or_default(&self, var: &Var) -> String {
        self.values
            .get(var.name)
            .cloned()
            .unwrap_or_else(|| match var.default {
                vars::DefaultValue::Value(v) => v.to_owned(),
                _ => String::new(),
            })
    }
}

impl<const GLOBAL: bool> Source for VarFlags<GLOBAL> {
    fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }
}

fn arg(var: &'static Var) -> Arg {
    let help = format!(
        "{} [default: {}] [values: {}]",
        var.help,
        var.default_text().replace('`', ""),
        var.range_text().replace('`', "")
    );
    Arg::new(var.name)
        .long(var.flag)
        .env(var.name)
        .hide_env_values(var.secret)
        .global(var.scope == Scope::Global)
        .action(ArgAction::Set)
        .help(help)
}

impl<const GLOBAL: bool> FromArgMatches for VarFlags<GLOBAL> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut values = BTreeMap::new();
        for var in Self::vars() {
            if let Ok(Some(value)) = matches.try_get_one::<String>(var.name) {
                values.insert(var.name, value.clone());
            }
        }
        Ok(Self { values })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<const GLOBAL: bool> Args for VarFlags<GLOBAL> {
    fn augment_args(cmd: Command) -> Command {
        let cmd = cmd.args(Self::vars().map(arg));
        if GLOBAL {
            cmd
        } else {
            cmd.after_help(vars::ENDPOINT_VARS_HELP)
        }
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}
