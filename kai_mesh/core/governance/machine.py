"""The governance machine: threshold-signed proposals folded into one state, with no hub.

`Governance.receive` takes proposals, votes and redemptions (`gov_wire`) from anyone, in any order,
any number of times, and keeps every record whose signatures verify, up to the `MAX_*` bounds
(past them it refuses new records as "full", and only then does arrival order matter). What they
mean is a pure function of the set held, so two nodes holding the same records agree on every
field of `state`, whatever order they arrived in:

- A proposal is **certified** when its parent is certified (the genesis counts as certified: its
  id is the mesh id), its proposer is an admin as of its parent, its body applies to the state
  after its parent, and votes by at least `threshold` distinct admins of that state have
  `signed_time <= expires_at`. An `admin_change` also needs the new threshold of the new admins.
  Votes by anyone else, after expiry, or a second vote by one admin (the earliest is kept) do not
  count; `proposals()` says why for each. No local clock is ever consulted: `now` arguments only
  date this node's own signatures and say what to display as expired.
- The certified proposals form a tree rooted at the genesis. The **chain** walks it from the
  genesis, taking at each step the child with the deepest certified subtree, the lower id on a
  tie. Since 2m > n, two certified siblings mean some admin voted for both (`evidence()`);
  preferring the deeper branch means one such admin cannot roll back a long history by
  certifying a stale sibling, since honest admins vote only for children of their own head.
  Proposals off the chain are **orphaned**; `rebase` proposes the same change again on the head.
- `state` is the fold of the chain (`GovernanceState`), then the invites' claims: an invite
  authorized on the chain is taken by the redemption with the lowest `(signed_time, id)` held,
  so every node admits the same one node whatever it saw first; the others are reported as
  "invite_taken". The time is the claimant's own, so whoever holds a leaked invite secret can
  backdate a claim: a leaked invite is answered by revoking the node it admitted. A revoked node
  id stays revoked: a redemption or authorization cannot bring it back (it needs a new key).

- A **withdrawal** by a proposal's proposer makes an uncertified proposal "withdrawn": no node
  votes for it any more, it is not synced as open, and it no longer keeps its voters from
  proposing or voting for a sibling (the rule that otherwise holds them until it expires). It
  cannot undo a certification: votes are what certify, so a proposal that gathers its threshold
  anyway (votes cast before the withdrawal was seen) is certified on every node alike, and if a
  sibling is certified too the usual fork rule chooses. A withdrawal by anyone else does not
  count (one admin must not veto another's proposal: the others simply do not vote).

`propose`, `vote`, `withdraw`, `rebase` and `redeem` make this node's records and take them in
at once; `receive` takes anyone's; `state`, `head`, `log`, `proposals`, `evidence`, `redemptions`,
`is_member`, `member_key` and `is_admin` read; `objects_after(head)` is what a peer at `head`
lacks. An invite is a `node_authorization` of `{"invite_key": InviteSecret(seed).verify_key}`.

The state after each proposal depends only on its ancestors, so it is computed once per proposal;
votes only ever add to certification, so the certified tree only grows and the usual case (a
child of the head certified) extends the chain without a walk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from itertools import combinations
from typing import Any

from kai_mesh.core.codec import digest
from kai_mesh.core.errors import ProtocolError, UsageError
from kai_mesh.core.governance.fold import (
    Evidence,
    GovernanceState,
    LogEntry,
    Member,
    Outcome,
    ProposalStatus,
    Refusal,
    VoteStatus,
    apply,
)
from kai_mesh.core.governance.wire import (
    InviteSecret,
    Proposal,
    Redemption,
    SignedProposal,
    SignedRedemption,
    SignedVote,
    SignedWithdrawal,
    Vote,
    Withdrawal,
    check_new_body,
    check_signatures,
    encode_proposal,
    encode_redemption,
    encode_vote,
    encode_withdrawal,
    parse_object,
)
from kai_mesh.core.mesh.genesis import Genesis
from kai_mesh.core.mesh.identity import NodeSecrets, node_id_of

__all__ = [
    "Evidence",
    "Governance",
    "GovernanceState",
    "LogEntry",
    "Member",
    "Outcome",
    "ProposalStatus",
    "Refusal",
    "VoteStatus",
    "apply",
]

MAX_PROPOSALS = 10_000
MAX_VOTES = 200_000
MAX_INVITES = 10_000  # invite keys with claims held
MAX_CLAIMS = 8  # claims kept per invite: the lowest (signed_time, id), so the winner is kept
INITIAL_ROLE = "member"


class Governance:
    """One mesh's governance as this node holds it. Sans-IO: bytes in, bytes out.

    `initial_members`: node id -> key of members from the start besides the genesis's
    `trusted_nodes` (which are keys already). Every node of the mesh must pass the same map.
    """

    def __init__(self, genesis: Genesis, initial_members: Mapping[bytes, bytes] | None = None):
        genesis.check()
        self.genesis = genesis
        self.mesh_id = genesis.mesh_id
        members = {node_id_of(k): Member(k, INITIAL_ROLE) for k in genesis.trusted_nodes}
        for node_id, key in (initial_members or {}).items():
            if node_id_of(key) != node_id:
                raise UsageError(f"initial member {node_id.hex()}: the key is another node's")
            members[node_id] = Member(key, INITIAL_ROLE)
        self._genesis_state = GovernanceState(
            admins=tuple(genesis.admins),
            threshold=genesis.threshold,
            members=members,
            invites={},
            redeemed={},
            revoked={},
            policy=dict(genesis.policy),
            config={},
            shutdown=False,
            shutdown_reason="",
            head=self.mesh_id,
            height=0,
        )
        self._proposals: dict[bytes, SignedProposal] = {}
        self._children: dict[bytes, set[bytes]] = {}
        self._votes: dict[bytes, dict[bytes, SignedVote]] = {}
        self._vote_count = 0  # votes and withdrawals held
        self._withdrawals: dict[bytes, dict[bytes, SignedWithdrawal]] = {}  # pid -> key -> record
        self._claims: dict[bytes, dict[bytes, SignedRedemption]] = {}  # invite key -> id -> claim
        self._results: dict[bytes, GovernanceState | Refusal] = {}  # pid -> state after it
        self._tree: set[bytes] = set()  # certified proposals (only grows)
        self._chain: list[bytes] = []
        self._height: dict[bytes, int] = {}
        self._final: GovernanceState | None = None
        self.refused: dict[str, int] = {}  # records refused, by reason

    # Reading --------------------------------------------------------------------------------------

    @property
    def state(self) -> GovernanceState:
        if self._final is None:
            self._final = self._with_claims(self._head_state())
        return self._final

    def head(self) -> bytes:
        return self._chain[-1] if self._chain else self.mesh_id

    def is_member(self, node_id: bytes) -> bool:
        return node_id in self.state.members

    def member_key(self, node_id: bytes) -> bytes | None:
        member = self.state.members.get(node_id)
        return None if member is None else member.key

    def is_admin(self, key: bytes) -> bool:
        return key in self.state.admins

    def vouched(self, data: bytes) -> bool:
        """Whether a record from an unproven sender (a radio broadcast) is worth taking: a
        proposal or vote by a current admin, or a claim of an invite authorized on the chain.
        `receive` keeps any record whose signatures verify, and a link proves a member; a
        broadcast proves nothing, so this keeps strangers from filling the store. A record it
        turns away still arrives by the link sync if it counts."""
        try:
            obj = parse_object(data)
        except ProtocolError:
            return True  # `receive` refuses it, counted with its reason
        state = self.state
        if isinstance(obj, SignedProposal):
            return obj.proposal.proposer in state.admins
        if isinstance(obj, SignedVote):
            return obj.vote.voter in state.admins
        if isinstance(obj, SignedWithdrawal):
            return obj.withdrawal.withdrawer in state.admins
        key = obj.redemption.invite_key
        return key in state.invites or key in state.redeemed

    def log(self) -> list[LogEntry]:
        """The certified chain, oldest first, with the admins whose votes counted."""
        out = []
        for height, pid in enumerate(self._chain, 1):
            p = self._proposals[pid].proposal
            signers = tuple(sorted(self._counted(self._proposals[pid])))
            out.append(LogEntry(height, pid, p.kind, p.body, p.proposer, signers, p.expires_at))
        return out

    def proposals(self, now: int | None = None) -> list[ProposalStatus]:
        """Every proposal held: the chain first, then by id. `now` only decides "expired"."""
        out = []
        for pid in [*self._chain, *sorted(set(self._proposals) - set(self._height))]:
            sp = self._proposals[pid]
            p = sp.proposal
            why = self._proposal_why(sp)
            if pid in self._height:
                status = "certified"
            elif why is not None and why.reason == "withdrawn":
                status = "withdrawn"
            elif why is not None:
                status = "refused" if why.reason not in _ORPHANED else "orphaned"
            elif now is not None and now > p.expires_at:
                status = "expired"
            else:
                status = "open"
            votes = []
            for voter, sv in sorted(self._votes.get(pid, {}).items()):
                vwhy = self._vote_why(sp, voter)
                text = "" if vwhy is None else f"{vwhy.reason}: {vwhy.detail}"
                votes.append(VoteStatus(voter, sv.vote.signed_time, vwhy is None, text))
            out.append(
                ProposalStatus(
                    id=pid,
                    kind=p.kind,
                    body=p.body,
                    parent=p.parent,
                    proposer=p.proposer,
                    expires_at=p.expires_at,
                    status=status,
                    why="" if why is None else f"{why.reason}: {why.detail}",
                    votes=tuple(votes),
                    height=self._height.get(pid),
                )
            )
        return out

    def evidence(self) -> list[Evidence]:
        """Admins who voted for two certified siblings, with both votes."""
        out = []
        for parent in sorted({self.mesh_id} | self._tree):
            kids = sorted(c for c in self._children.get(parent, ()) if c in self._tree)
            for a, b in combinations(kids, 2):
                both = self._counted(self._proposals[a]) & self._counted(self._proposals[b])
                for admin in sorted(both):
                    votes = (self._votes[a][admin].to_bytes(), self._votes[b][admin].to_bytes())
                    out.append(Evidence(admin, parent, (a, b), votes))
        return out

    def sync_digest(self) -> bytes:
        """Equal on two nodes that hold the same chain, the same winning claims and the same open
        children of the head with the same counted votes: exactly what `objects_after` sends.
        Heartbeats carry it, so a claim or an open proposal whose push was lost is still
        synced, though neither moves the head; and two nodes holding the same never ask."""
        parts = [self.head()]
        for invite, node_key in sorted(self.state.redeemed.items()):
            parts += [invite, node_key]
        for pid in self._open_children():
            parts += [pid, len(self._counted(self._proposals[pid])).to_bytes(4, "big")]
        for pid in self._withdrawn_children():  # none: the digest older nodes compute
            parts += [pid, b"withdrawn"]
        return digest("gov-sync", *parts)

    def _open_children(self) -> list[bytes]:
        kids = sorted(self._children.get(self.head(), ()))
        return [c for c in kids if self._proposal_why(self._proposals[c]) is None]

    def _withdrawn_children(self) -> list[bytes]:
        kids = sorted(self._children.get(self.head(), ()))
        return [c for c in kids if c not in self._tree and self._withdrawn(self._proposals[c])]

    def objects_after(self, head: bytes) -> list[bytes]:
        """What a peer whose head is `head` may lack: the chain after it (from the genesis if
        `head` is not on our chain), each proposal followed by the votes that count for it; the
        open children of our head with theirs; the winning claim of each invite on the chain.
        Open proposals and claims are sent even to a peer at our head: a shell that pushes
        records eagerly can leave them out."""
        start = len(self._chain) if head == self.head() else self._height.get(head, 0)
        out: list[bytes] = []
        for pid in [*self._chain[start:], *self._open_children()]:
            sp = self._proposals[pid]
            out.append(sp.data)
            for voter in sorted(self._counted(sp)):
                sv = self._votes[pid][voter]
                if sv != sp.vote:
                    out.append(sv.to_bytes())
        for invite in sorted(self._head_state().invites):
            claims = self._claims.get(invite)
            if claims:  # the winner alone: a peer that holds a later claim takes it instead
                out.append(claims[_winner(claims)].to_bytes())
        for pid in self._withdrawn_children():  # so that peers stop voting for it too
            sp = self._proposals[pid]
            out += [sp.data, self._withdrawals[pid][sp.proposal.proposer].to_bytes()]
        return out

    # Writing --------------------------------------------------------------------------------------

    def propose(
        self,
        secrets: NodeSecrets,
        kind: str,
        body: Mapping[str, Any],
        expires_at: int,
        nonce: bytes,
        now: int,
    ) -> bytes:
        """A new proposal on the head, carrying this admin's vote at `now`; taken in at once
        (a 1-of-1 mesh certifies it here). Raises `UsageError` for a bad kind or body, a
        non-admin, `now > expires_at`, a change that cannot follow the head, or while this key
        has voted for another open child of the head. The body is checked by `check_new_body`
        before anything is signed: a mistyped key cannot leave a proposal open that no one can
        certify."""
        body = check_new_body(kind, body)
        key = secrets.verify_key
        state = self._head_state()
        if key not in state.admins:
            raise UsageError("only an admin can propose")
        if now > expires_at:
            raise UsageError("the proposal would expire before it is made")
        self._check_no_rival(key, None, now)
        proposal = Proposal(self.head(), kind, body, expires_at, key, nonce, now)
        result = apply(state, SignedProposal(proposal, proposal.id, b"", b""))
        if isinstance(result, Refusal):
            raise UsageError(f"{kind}: {result.detail}")
        data = encode_proposal(proposal, secrets, self.mesh_id)
        self.receive(data)
        return data

    def vote(self, secrets: NodeSecrets, proposal_id: bytes, now: int) -> bytes:
        """This admin's vote for an open child of the head (its earlier vote if it has one).
        Raises `UsageError` for an unknown, certified, orphaned, refused or expired proposal,
        a non-admin, or while this key has voted for another open child of the head."""
        sp = self._proposals.get(proposal_id)
        if sp is None:
            raise UsageError("no such proposal here")
        key = secrets.verify_key
        why = self._proposal_why(sp)
        if proposal_id in self._height or why is not None:
            detail = "it is certified" if why is None else f"{why.reason}: {why.detail}"
            raise UsageError(f"cannot vote for this proposal: {detail}")
        after = self._results[proposal_id]
        assert isinstance(after, GovernanceState)
        voters = set(self._head_state().admins)
        if sp.proposal.kind == "admin_change":
            voters |= set(after.admins)
        if key not in voters:
            raise UsageError("only an admin can vote")
        if now > sp.proposal.expires_at:
            raise UsageError("the proposal has expired")
        mine = self._votes.get(proposal_id, {}).get(key)
        if mine is not None:
            return mine.to_bytes()
        self._check_no_rival(key, proposal_id, now)
        data = encode_vote(Vote(proposal_id, key, now), secrets, self.mesh_id)
        self.receive(data)
        return data

    def withdraw(self, secrets: NodeSecrets, proposal_id: bytes, now: int) -> bytes:
        """This node's withdrawal of its own open proposal (see the module docstring); taken in
        at once. Raises `UsageError` for an unknown proposal, another admin's, or one that is
        certified, orphaned, refused or withdrawn already."""
        sp = self._proposals.get(proposal_id)
        if sp is None:
            raise UsageError("no such proposal here")
        if sp.proposal.proposer != secrets.verify_key:
            raise UsageError(
                "only its proposer can withdraw a proposal; the other admins just do not vote"
            )
        why = self._proposal_why(sp)
        if proposal_id in self._height or why is not None:
            detail = "it is certified" if why is None else f"{why.reason}: {why.detail}"
            raise UsageError(f"cannot withdraw this proposal: {detail}")
        data = encode_withdrawal(
            Withdrawal(proposal_id, secrets.verify_key, now), secrets, self.mesh_id
        )
        self.receive(data)
        return data

    def rebase(
        self, secrets: NodeSecrets, proposal_id: bytes, expires_at: int, nonce: bytes, now: int
    ) -> bytes:
        """An orphaned (or any) proposal's kind and body proposed again on the head."""
        sp = self._proposals.get(proposal_id)
        if sp is None:
            raise UsageError("no such proposal here")
        p = sp.proposal
        return self.propose(secrets, p.kind, p.body, expires_at, nonce, now)

    def redeem(self, invite: InviteSecret, node: NodeSecrets, now: int) -> bytes:
        """A claim of `invite` for `node`, signed by both, taken in at once."""
        claim = Redemption(invite.verify_key, node.verify_key, now)
        data = encode_redemption(claim, invite, node, self.mesh_id)
        self.receive(data)
        return data

    def receive(self, data: bytes) -> Outcome:
        """Take in a proposal, vote or redemption from anyone. Never raises for bad bytes."""
        out = Outcome()
        try:
            obj = parse_object(data)
            fresh = self._is_fresh(obj, out)
            if fresh:
                check_signatures(obj, self.mesh_id)
        except ProtocolError as exc:
            self._refuse(out, Refusal(exc.reason, str(exc)))
            return out
        if not fresh:
            return out
        chain, length = self._chain, len(self._chain)
        if isinstance(obj, SignedProposal):
            self._take_proposal(obj, out)
        elif isinstance(obj, SignedVote):
            self._take_vote(obj, out)
        elif isinstance(obj, SignedWithdrawal):
            self._take_withdrawal(obj, out)
        else:
            self._take_claim(obj, out)
        if self._chain is chain:
            out.certified = self._chain[length:]
        else:  # rebuilt: compare with what the chain was
            old, new = chain[:length], set(self._chain)
            out.orphaned = [pid for pid in old if pid not in new]
            out.certified = [pid for pid in self._chain if pid not in set(old)]
        if out.certified or out.orphaned:
            out.changed = True
        if out.changed:
            self._final = None
        return out

    # Intake ---------------------------------------------------------------------------------------

    def _refuse(self, out: Outcome, refusal: Refusal) -> None:
        out.refused.append(refusal)
        self.refused[refusal.reason] = self.refused.get(refusal.reason, 0) + 1

    def _is_fresh(
        self,
        obj: SignedProposal | SignedVote | SignedRedemption | SignedWithdrawal,
        out: Outcome,
    ) -> bool:
        """False for a record held already (no signature check needed) or one we cannot keep."""
        if isinstance(obj, SignedProposal):
            held = obj.id in self._proposals
            full = len(self._proposals) >= MAX_PROPOSALS
        elif isinstance(obj, SignedVote):
            held = self._votes.get(obj.vote.proposal_id, {}).get(obj.vote.voter) == obj
            full = self._vote_count >= MAX_VOTES
        elif isinstance(obj, SignedWithdrawal):
            w = obj.withdrawal
            held = self._withdrawals.get(w.proposal_id, {}).get(w.withdrawer) == obj
            full = self._vote_count >= MAX_VOTES
        else:
            claims = self._claims.get(obj.redemption.invite_key)
            held = claims is not None and obj.redemption.id in claims
            full = claims is None and len(self._claims) >= MAX_INVITES
        if held:
            out.duplicate = True
        elif full:
            self._refuse(out, Refusal("full", "governance storage is full"))
        return not held and not full

    def _take_proposal(self, sp: SignedProposal, out: Outcome) -> None:
        pid = sp.id
        self._proposals[pid] = sp
        self._children.setdefault(sp.proposal.parent, set()).add(pid)
        self._add_vote(sp.vote)
        out.stored = True
        self._touch(pid)
        why = self._proposal_why(sp)
        if why is not None:
            out.not_counted.append(why)

    def _add_vote(self, sv: SignedVote) -> bool:
        """Keep `sv` unless this voter's vote for that proposal is earlier; True if kept."""
        votes = self._votes.setdefault(sv.vote.proposal_id, {})
        old = votes.get(sv.vote.voter)
        if old is not None and (old.vote.signed_time, old.signature) <= (
            sv.vote.signed_time,
            sv.signature,
        ):
            return False
        self._vote_count += old is None
        votes[sv.vote.voter] = sv
        return True

    def _take_vote(self, sv: SignedVote, out: Outcome) -> None:
        pid, voter = sv.vote.proposal_id, sv.vote.voter
        if not self._add_vote(sv):
            out.not_counted.append(
                Refusal("duplicate_vote", "this admin's earlier vote counts", pid)
            )
            return
        out.stored = True
        sp = self._proposals.get(pid)
        if sp is None:
            out.not_counted.append(Refusal("unknown_proposal", "kept until it arrives", pid))
            return
        self._touch(pid)
        why = self._vote_why(sp, voter)
        if why is not None:
            out.not_counted.append(why)
        elif pid not in self._height and (pwhy := self._proposal_why(sp)) is not None:
            out.not_counted.append(pwhy)

    def _take_withdrawal(self, sw: SignedWithdrawal, out: Outcome) -> None:
        """Keep the earliest withdrawal per (proposal, signer), as for votes; it counts only
        when signed by the proposal's proposer (judged when the proposal is here)."""
        w = sw.withdrawal
        pid = w.proposal_id
        held = self._withdrawals.setdefault(pid, {})
        old = held.get(w.withdrawer)
        if old is not None and (old.withdrawal.signed_time, old.signature) <= (
            w.signed_time,
            sw.signature,
        ):
            out.not_counted.append(Refusal("duplicate_withdrawal", "an earlier one is kept", pid))
            return
        self._vote_count += old is None
        held[w.withdrawer] = sw
        out.stored = True
        sp = self._proposals.get(pid)
        if sp is None:
            out.not_counted.append(Refusal("unknown_proposal", "kept until it arrives", pid))
        elif sp.proposal.proposer != w.withdrawer:
            out.not_counted.append(Refusal("not_proposer", "only the proposer withdraws", pid))
        elif pid in self._tree:
            out.not_counted.append(Refusal("certified", "a certified proposal stays", pid))

    def _withdrawn(self, sp: SignedProposal) -> bool:
        return sp.proposal.proposer in self._withdrawals.get(sp.id, {})

    def _take_claim(self, sr: SignedRedemption, out: Outcome) -> None:
        r = sr.redemption
        claims = self._claims.setdefault(r.invite_key, {})
        claims[r.id] = sr
        if len(claims) > MAX_CLAIMS:  # keep the lowest: the winner is among them
            del claims[max(claims, key=lambda rid: (claims[rid].redemption.signed_time, rid))]
        out.stored = r.id in claims
        role = self._head_state().invites.get(r.invite_key)
        winner = _winner(claims)
        if role is None:
            out.not_counted.append(Refusal("unknown_invite", "no certified invite with this key"))
        elif winner != r.id:
            out.not_counted.append(Refusal("invite_taken", "an earlier claim took this invite"))
        else:
            out.changed = True
            if node_id_of(r.node_key) in self._head_state().revoked:
                out.not_counted.append(Refusal("revoked", "the claiming node is revoked"))

    # Judging --------------------------------------------------------------------------------------

    def _head_state(self) -> GovernanceState:
        if not self._chain:
            return self._genesis_state
        state = self._results[self._chain[-1]]
        assert isinstance(state, GovernanceState)
        return state

    def _before(self, sp: SignedProposal) -> GovernanceState | None:
        """The state after `sp`'s parent, if that parent is certified."""
        parent = sp.proposal.parent
        if parent == self.mesh_id:
            return self._genesis_state
        if parent in self._tree:
            state = self._results[parent]
            assert isinstance(state, GovernanceState)
            return state
        return None

    def _after(self, sp: SignedProposal) -> GovernanceState | Refusal | None:
        result = self._results.get(sp.id)
        if result is None:
            before = self._before(sp)
            if before is None:
                return None
            result = self._results[sp.id] = apply(before, sp)
        return result

    def _counted(self, sp: SignedProposal) -> set[bytes]:
        """Voters whose votes count for `sp`: admins before it (and, for an admin change,
        after it) voting at or before its expiry."""
        before, after = self._before(sp), self._after(sp)
        if before is None or not isinstance(after, GovernanceState):
            return set()
        admins = set(before.admins)
        if sp.proposal.kind == "admin_change":
            admins |= set(after.admins)
        expiry = sp.proposal.expires_at
        votes = self._votes.get(sp.id, {})
        return {k for k, v in votes.items() if k in admins and v.vote.signed_time <= expiry}

    def _is_certified(self, sp: SignedProposal) -> bool:
        before, after = self._before(sp), self._after(sp)
        if before is None or not isinstance(after, GovernanceState):
            return False
        counted = self._counted(sp)
        if len(counted & set(before.admins)) < before.threshold:
            return False
        return sp.proposal.kind != "admin_change" or (
            len(counted & set(after.admins)) >= after.threshold
        )

    def _vote_why(self, sp: SignedProposal, voter: bytes) -> Refusal | None:
        """Why `voter`'s vote does not count for `sp`, or None."""
        before, after, pid = self._before(sp), self._after(sp), sp.id
        if before is None or after is None:
            return Refusal("unknown_parent", "the proposal's parent is not certified here", pid)
        if isinstance(after, Refusal):
            return Refusal("proposal_refused", f"{after.reason}: {after.detail}", pid)
        admins = set(before.admins)
        if sp.proposal.kind == "admin_change":
            admins |= set(after.admins)
        if voter not in admins:
            return Refusal("not_admin", "the voter is not an admin as of the parent", pid)
        if self._votes[pid][voter].vote.signed_time > sp.proposal.expires_at:
            return Refusal("after_expiry", "signed after the proposal expired", pid)
        return None

    def _proposal_why(self, sp: SignedProposal) -> Refusal | None:
        """Why `sp` is not (and cannot become) the next on the chain, or None if it is on it
        or open."""
        pid = sp.id
        if pid in self._height:
            return None
        after = self._after(sp)
        if after is None:
            return Refusal("unknown_parent", "its parent is not certified here", pid)
        if isinstance(after, Refusal):
            return after
        if pid in self._tree:
            return Refusal("lost_fork", "a certified sibling's branch was chosen", pid)
        if self._withdrawn(sp):
            return Refusal("withdrawn", "its proposer withdrew it", pid)
        if sp.proposal.parent != self.head():
            return Refusal("stale_parent", "its parent is no longer the head: rebase it", pid)
        return None

    def _check_no_rival(self, key: bytes, proposal_id: bytes | None, now: int) -> None:
        for pid in self._children.get(self.head(), ()):
            sp = self._proposals[pid]
            if (
                pid != proposal_id
                and key in self._votes.get(pid, {})
                and now <= sp.proposal.expires_at
                and self._proposal_why(sp) is None
            ):
                raise UsageError(
                    f"this key voted for open proposal {pid.hex()[:16]} on the same parent; "
                    "wait for it to be certified or to expire"
                )

    # The chain ------------------------------------------------------------------------------------

    def _touch(self, pid: bytes) -> None:
        """`pid` or its votes changed: grow the tree and the chain if it is now certified."""
        sp = self._proposals[pid]
        if pid in self._tree or not self._is_certified(sp):
            return
        if sp.proposal.parent == self.head():
            self._extend()
        else:
            self._rebuild()

    def _extend(self) -> None:
        """Follow certified children of the head while there is exactly one."""
        while True:
            kids = [
                c
                for c in self._children.get(self.head(), ())
                if c in self._tree or self._is_certified(self._proposals[c])
            ]
            if len(kids) > 1:
                self._rebuild()
                return
            if not kids:
                return
            self._tree.add(kids[0])
            self._height[kids[0]] = len(self._chain) + 1
            self._chain.append(kids[0])

    def _rebuild(self) -> None:
        """Walk the certified tree from the genesis and choose the chain afresh."""
        order, kids_of, stack = [], {}, [self.mesh_id]
        while stack:
            node = stack.pop()
            order.append(node)
            kids = []
            for c in sorted(self._children.get(node, ())):
                if c in self._tree or self._is_certified(self._proposals[c]):
                    self._tree.add(c)
                    kids.append(c)
                    stack.append(c)
            kids_of[node] = kids
        depth: dict[bytes, int] = {}
        for node in reversed(order):
            depth[node] = 1 + max((depth[c] for c in kids_of[node]), default=0)
        chain, node = [], self.mesh_id
        while kids_of[node]:
            node = min(kids_of[node], key=lambda c: (-depth[c], c))
            chain.append(node)
        self._chain = chain
        self._height = {pid: i for i, pid in enumerate(chain, 1)}

    # Claims ---------------------------------------------------------------------------------------

    def _with_claims(self, state: GovernanceState) -> GovernanceState:
        """`state` with each invite taken by its winning claim."""
        members, invites, redeemed = dict(state.members), dict(state.invites), {}
        revoked_keys = dict(state.revoked_keys)
        for invite in sorted(state.invites):
            claims = self._claims.get(invite)
            if not claims:
                continue
            key = claims[_winner(claims)].redemption.node_key
            role = invites.pop(invite)
            redeemed[invite] = key
            node_id = node_id_of(key)
            if node_id in state.revoked:  # admitted by invite, then revoked: its key is this
                revoked_keys.setdefault(node_id, key)
            elif node_id not in members:
                members[node_id] = Member(key, role)
        if not redeemed:
            return state
        return replace(
            state,
            members=members,
            invites=invites,
            redeemed=redeemed,
            revoked_keys=revoked_keys,
        )

    def redemptions(self) -> dict[bytes, bytes]:
        """Invite key -> id of the claim that takes it (by the lowest (signed_time, id))."""
        return {invite: _winner(claims) for invite, claims in self._claims.items()}


_ORPHANED = frozenset({"unknown_parent", "stale_parent", "lost_fork"})


def _winner(claims: Mapping[bytes, SignedRedemption]) -> bytes:
    return min(claims, key=lambda rid: (claims[rid].redemption.signed_time, rid))
