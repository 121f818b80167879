"""The refresh DAG's job: after a promotion, every current profile under the model of its date."""

from __future__ import annotations

from traitflow.jobs._common import open_store
from traitflow.pipeline import profile_customers
from traitflow.profile_cache import profiles_changed
from traitflow.runs import RefreshResult, RunContext, iso
from traitflow.store import StaleModelError


def refresh_all_profiles(context: RunContext) -> RefreshResult:
    """Recompute every customer's profile as of the newest profile date, with the model selected
    for that date, so current profiles never mix models."""
    with open_store(context) as store:
        as_of = store.latest_profile_as_of()
        if as_of is None:
            return RefreshResult(n_profiles=0, reason="no profiles yet")
        version = store.model_version_for(as_of)
        if version is None:
            return RefreshResult(n_profiles=0, reason=f"no model for {iso(as_of)}")
        if store.count_profiles_not_at(as_of, version) == 0:
            # The weekly run wrote every profile under this model as of this date already.
            return RefreshResult(
                n_profiles=0, model_version=version, as_of=iso(as_of), reason="already current"
            )
        batch = profile_customers(store.read_events(end=as_of), store.load_model(version), as_of)
        batch.model_version = version
        try:
            store.write_profiles(batch, require_selected_model=True)
        except StaleModelError as stale:
            # A newer promotion wrote its own profiles and triggers its own refresh run.
            return RefreshResult(n_profiles=0, as_of=iso(as_of), reason=f"skipped: {stale}")
        profiles_changed(store)  # every profile may have moved: the API's cache starts over
    return RefreshResult(n_profiles=len(batch), model_version=version, as_of=iso(as_of))
