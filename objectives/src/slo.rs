//! The SLO catalogue: which service-level objectives exist, and how they conflict.
//!
//! Owns: [`Slo`] (a known SLO) and [`Catalogue`] (the site and volume names that
//! `place-on-<name>` and `exclude-from-<name>` may use). An unknown SLO is refused when an
//! objective is added, with the list of known ones.
//!
//! Conflicts (decided by precedence, see [`crate::eval`]): `place-on-X` against
//! `exclude-from-X`; `place-on-local-volumes` against `place-on-shared-object-volumes`.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slo {
    /// Keep the data on the volumes of the site that evaluates the objective.
    PlaceOnLocalVolumes,
    /// Keep the data on the shared object volumes (the bucket) only.
    PlaceOnSharedObjectVolumes,
    /// Never let the data go offline (no archive tier).
    KeepOnline,
    /// Place the data at this site or volume.
    PlaceOn(String),
    /// Keep the data away from this site or volume.
    ExcludeFrom(String),
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slo::PlaceOnLocalVolumes => write!(f, "place-on-local-volumes"),
            Slo::PlaceOnSharedObjectVolumes => write!(f, "place-on-shared-object-volumes"),
            Slo::KeepOnline => write!(f, "keep-online"),
            Slo::PlaceOn(n) => write!(f, "place-on-{n}"),
            Slo::ExcludeFrom(n) => write!(f, "exclude-from-{n}"),
        }
    }
}

impl Slo {
    /// Whether two SLOs cannot both apply.
    pub fn conflicts(&self, other: &Slo) -> bool {
        use Slo::*;
        match (self, other) {
            (PlaceOn(a), ExcludeFrom(b)) | (ExcludeFrom(a), PlaceOn(b)) => a == b,
            (PlaceOnLocalVolumes, PlaceOnSharedObjectVolumes)
            | (PlaceOnSharedObjectVolumes, PlaceOnLocalVolumes) => true,
            _ => false,
        }
    }
}

/// The names `place-on-…` and `exclude-from-…` accept: the sites and volumes of this
/// deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalogue {
    pub places: Vec<String>,
}

impl Catalogue {
    pub fn new(places: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Catalogue {
            places: places.into_iter().map(Into::into).collect(),
        }
    }

    /// The SLO a name denotes, if it is known.
    pub fn lookup(&self, name: &str) -> Option<Slo> {
        let fixed = match name {
            "place-on-local-volumes" => Some(Slo::PlaceOnLocalVolumes),
            "place-on-shared-object-volumes" => Some(Slo::PlaceOnSharedObjectVolumes),
            "keep-online" => Some(Slo::KeepOnline),
            _ => None,
        };
        if fixed.is_some() {
            return fixed;
        }
        let place = |n: &str| self.places.iter().any(|p| p == n).then(|| n.to_string());
        if let Some(n) = name.strip_prefix("place-on-") {
            return place(n).map(Slo::PlaceOn);
        }
        name.strip_prefix("exclude-from-")
            .and_then(place)
            .map(Slo::ExcludeFrom)
    }

    /// Every SLO name this catalogue knows.
    pub fn known(&self) -> Vec<String> {
        let mut out = vec![
            "place-on-local-volumes".to_string(),
            "place-on-shared-object-volumes".to_string(),
            "keep-online".to_string(),
        ];
        out.extend(self.places.iter().map(|p| format!("place-on-{p}")));
        out.extend(self.places.iter().map(|p| format!("exclude-from-{p}")));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_places_are_refused() {
        let c = Catalogue::new(["east", "west"]);
        for n in c.known() {
            assert_eq!(c.lookup(&n).unwrap().to_string(), n);
        }
        assert_eq!(c.lookup("place-on-north"), None);
        assert_eq!(c.lookup("keep-offline"), None);
        assert!(Slo::PlaceOn("east".into()).conflicts(&Slo::ExcludeFrom("east".into())));
        assert!(!Slo::PlaceOn("east".into()).conflicts(&Slo::ExcludeFrom("west".into())));
    }
}
