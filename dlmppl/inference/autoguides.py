r"""Autoguides for models with manifold-valued latent variables.

:class:`AutoManifoldNormal` is the manifold counterpart of Pyro's
``AutoNormal``: a mean-field guide with one factor per latent site,

* a Power Spherical distribution (De Cao & Aziz, "The Power Spherical
  distribution", 2020) on every site whose support is a sphere, with its mean
  direction a manifold parameter on the sphere and a positive concentration;
* a wrapped normal (Nagano et al., "A Wrapped Normal Distribution on
  Hyperbolic Space for Gradient-Based Learning", ICML 2019; Skopek et al.,
  "Mixed-curvature Variational Autoencoders", ICLR 2020) on every other
  manifold site, with its location a manifold parameter on the site's
  manifold and a positive scale per tangent direction (``WrappedNormal(M, …)``
  builds the family's own law where one is registered: on ``RP^n``, whose
  geometry is not the sphere's, the antipodally symmetric
  :class:`~dlmppl.distributions.projective.ProjectiveWrappedNormal`);
* a normal on the unconstrained value of every other site (as ``AutoNormal``),
  pushed through ``biject_to(support)``.

:meth:`AutoManifoldNormal.quantiles` gives, as ``AutoNormal``'s, per-coordinate
quantiles of the Euclidean sites, and for a manifold site the quantiles of the
geodesic distance to the factor's centre (the radii of its credible geodesic balls).

Every site is sampled directly from its factor (no auxiliary sites), so the
guide works with ``Trace_ELBO``, ``TraceMeanField_ELBO`` (analytic KL where
one is registered), ``RenyiELBO`` (IWAE bounds), ``Predictive`` and
``pyro.infer.Importance``.  Train it with :func:`dlmppl.inference.optim.RiemannianAdam`
so that the locations stay on their manifolds.
"""

from __future__ import annotations

from contextlib import ExitStack
from operator import attrgetter

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoGuide
from pyro.infer.autoguide.initialization import InitMessenger, init_to_feasible
from pyro.infer.autoguide.utils import deep_setattr, helpful_support_errors
from pyro.nn.module import PyroModule, PyroParam
from pyro.ops.tensor_utils import periodic_repeat
from torch.distributions import biject_to

from ..constraints import ManifoldConstraint
from ..constraints import manifold as manifold_constraint
from ..geometry import geometry_of

__all__ = ["AutoManifoldNormal", "init_to_manifold_sample"]


def init_to_manifold_sample(site):
    """Initialise manifold sites with a prior draw, other sites with ``init_to_feasible``."""
    if isinstance(site["fn"].support, ManifoldConstraint):
        return site["fn"].sample().detach()
    return init_to_feasible(site)


def _is_identity(t) -> bool:
    while isinstance(t, torch.distributions.transforms.IndependentTransform):
        t = t.base_transform
    return isinstance(t, torch.distributions.transforms.ComposeTransform) and not t.parts


def _tangent_dim(M, event_shape) -> int:
    return geometry_of(M).intrinsic_dim(event_shape)


class AutoManifoldNormal(AutoGuide):
    """Mean-field guide: Power Spherical / wrapped normal on manifold sites, normal elsewhere.

    Args:
        model: a Pyro model.
        init_loc_fn: per-site initialisation (default
            :func:`init_to_manifold_sample`: prior draws on manifolds,
            ``init_to_feasible`` elsewhere).
        init_scale: initial scale of normal and wrapped-normal factors.
        init_concentration: initial concentration of Power Spherical factors.
        create_plates: as in :class:`pyro.infer.autoguide.AutoNormal`.

    Parameters (``PyroModule`` attributes): ``locs.<site>`` (on the site's
    manifold for manifold sites, unconstrained otherwise), ``scales.<site>``
    (positive, shape ``batch + (d,)`` with ``d`` the intrinsic dimension for
    wrapped normals, the unconstrained shape otherwise) and
    ``concentrations.<site>`` (positive, shape ``batch``) for sphere sites.

    A manifold whose curvature is itself a latent or learned quantity of the
    model is read once, from the prototype trace; for learned curvatures use
    :class:`dlmppl.models.ManifoldVAE`, whose guide shares the model's
    manifold.
    """

    scale_constraint = constraints.softplus_positive

    def __init__(self, model, *, init_loc_fn=init_to_manifold_sample, init_scale=0.1, init_concentration=10.0, create_plates=None):
        if not isinstance(init_scale, float) or not init_scale > 0:
            raise ValueError(f"AutoManifoldNormal: init_scale must be a positive float, got {init_scale}")
        if not init_concentration > 0:
            raise ValueError(f"AutoManifoldNormal: init_concentration must be > 0, got {init_concentration}")
        self._init_scale = init_scale
        self._init_concentration = float(init_concentration)
        self.init_loc_fn = init_loc_fn
        super().__init__(InitMessenger(init_loc_fn)(model), create_plates=create_plates)

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        self._event_dims = {}
        self._kinds = {}
        self._manifolds = {}
        self.locs = PyroModule()
        self.scales = PyroModule()
        self.concentrations = PyroModule()
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            support = site["fn"].support
            value = site["value"].detach()
            if isinstance(support, ManifoldConstraint):
                M = support.manifold
                event_dim = support.event_dim
                init_loc = M.projx(value).detach()
                self._manifolds[name] = M
                g = geometry_of(M)
                # the unit sphere gets a Power Spherical factor, vector spaces a normal, the rest (the
                # torus included: flat, but its angles wrap) wrapped normals
                kind = "euclidean" if g.linear else ("sphere" if g.name == "Sphere" else "wrapped")
            else:
                with helpful_support_errors(site):
                    init_loc = biject_to(support).inv(value).detach()
                event_dim = site["fn"].event_dim + init_loc.dim() - value.dim()
                kind = "real"
            self._kinds[name] = kind
            self._event_dims[name] = event_dim
            for frame in site["cond_indep_stack"]:
                full_size = frame.full_size or frame.size
                if full_size != frame.size:
                    init_loc = periodic_repeat(init_loc, full_size, frame.dim - event_dim).contiguous()
            batch = init_loc.shape[: init_loc.dim() - event_dim]
            if kind in ("sphere", "wrapped"):
                deep_setattr(self.locs, name, PyroParam(init_loc, manifold_constraint(M), event_dim))
            else:
                deep_setattr(self.locs, name, PyroParam(init_loc, constraints.real, event_dim))
            if kind == "sphere":
                conc = torch.full(batch, self._init_concentration, dtype=init_loc.dtype, device=init_loc.device)
                deep_setattr(self.concentrations, name, PyroParam(conc, constraints.positive, 0))
            elif kind == "wrapped":
                d = _tangent_dim(M, init_loc.shape[init_loc.dim() - event_dim :])
                scale = torch.full(batch + (d,), self._init_scale, dtype=init_loc.dtype, device=init_loc.device)
                deep_setattr(self.scales, name, PyroParam(scale, self.scale_constraint, 1))
            else:
                scale = torch.full_like(init_loc, self._init_scale)
                deep_setattr(self.scales, name, PyroParam(scale, self.scale_constraint, event_dim))

    def get_factor(self, name: str):
        """The guide's distribution of site ``name`` (inside the site's plates)."""
        kind = self._kinds[name]
        loc = attrgetter(name)(self.locs)
        site = self.prototype_trace.nodes[name]
        if kind == "sphere":
            from ..distributions.power_spherical import PowerSpherical

            return PowerSpherical(loc, attrgetter(name)(self.concentrations))
        scale = attrgetter(name)(self.scales)
        if kind == "wrapped":
            from ..distributions.wrapped_normal import WrappedNormal

            return WrappedNormal(self._manifolds[name], loc, scale)
        base = dist.Normal(loc, scale).to_event(self._event_dims[name])
        if kind == "euclidean":
            return base
        transform = biject_to(site["fn"].support)
        if _is_identity(transform):
            return base
        return dist.TransformedDistribution(base, transform.with_cache())

    def forward(self, *args, **kwargs):
        """Sample every latent site from its factor; returns ``{name: value}``."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        result = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    if frame.vectorized:
                        stack.enter_context(plates[frame.name])
                result[name] = pyro.sample(name, self.get_factor(name))
        return result

    @torch.no_grad()
    def median(self, *args, **kwargs):
        """The factors' modes: locations on manifolds, ``biject_to(support)(loc)`` elsewhere."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        out = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            loc = attrgetter(name)(self.locs).detach()
            if self._kinds[name] == "real":
                loc = biject_to(site["fn"].support)(loc)
            out[name] = loc.clone()
        return out

    @torch.no_grad()
    def quantiles(self, quantiles, *args, num_samples: int = 4096, **kwargs):
        """Quantiles of each latent site under the guide, as ``AutoNormal.quantiles``.

        * Euclidean sites (normal factors): ``biject_to(support)(loc + scale Φ⁻¹(q))``
          per coordinate, exactly as ``AutoNormal``; shape ``(len(q), *site_shape)``.
        * Manifold sites: a point on a manifold has no scalar quantile, so the
          quantiles are those of the geodesic distance ``d(m, z)``, ``z ~`` factor,
          to the factor's centre ``m`` (:meth:`median`; the factors are symmetric
          under the geodesic reflection at ``m``, which makes ``m`` their Fréchet
          median where the law is concentrated): the radius ``r_q`` of the geodesic
          ball around ``m`` that holds guide probability ``q``.  Shape
          ``(len(q), *batch_shape)`` (one radius per point of the site).

          - sphere sites (Power Spherical, De Cao & Aziz 2020): exact, from
            ``(1 + cos d)/2 ~ Beta(α, β)``, ``α = (n-1)/2 + κ``, ``β = (n-1)/2``
            (``n`` the ambient dimension): ``r_q = arccos(2 B⁻¹(1 - q) - 1)``;
          - wrapped-normal sites: the empirical ``q``-quantile of ``d(m, z_s)`` over
            ``num_samples`` draws of the factor (randomness from torch's generator;
            the quantile's Monte Carlo error is ``sqrt(q(1-q)/num_samples) / f(r_q)``).

        Returns ``{site: tensor}`` on each site's device and dtype.
        """
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        out = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            kind = self._kinds[name]
            loc = attrgetter(name)(self.locs).detach()
            q = torch.as_tensor(quantiles, dtype=loc.dtype, device=loc.device).reshape(-1)
            if not ((q > 0) & (q < 1)).all():
                raise ValueError(f"quantiles must lie in (0, 1), got {q.tolist()}")
            if kind in ("real", "euclidean"):
                scale = attrgetter(name)(self.scales).detach()
                val = dist.Normal(loc, scale).icdf(q.reshape((-1,) + (1,) * loc.dim()))
                out[name] = biject_to(site["fn"].support)(val) if kind == "real" else val
            elif kind == "sphere":
                out[name] = _power_spherical_radius_quantiles(loc, attrgetter(name)(self.concentrations).detach(), q)
            else:
                if num_samples < 2:
                    raise ValueError(f"num_samples must be >= 2, got {num_samples}")
                fac = self.get_factor(name)
                z = fac.sample((num_samples,))
                g = geometry_of(self._manifolds[name])
                d = g.dist(loc.expand_as(z), z)  # (S, *batch)
                out[name] = torch.quantile(d, q, dim=0) if d.dim() > 0 else torch.quantile(d, q)
        return out


def _power_spherical_radius_quantiles(loc, concentration, q):
    """Exact quantiles ``(len(q), *batch)`` of the geodesic distance to the mean of a Power Spherical law."""
    from scipy.stats import beta as _beta

    n = loc.shape[-1]
    a = ((n - 1) / 2 + concentration).double().cpu().numpy()
    b = (n - 1) / 2
    qq = q.double().cpu().numpy().reshape((-1,) + (1,) * a.ndim)
    t = 2.0 * _beta.ppf(1.0 - qq, a, b) - 1.0  # the cosine, decreasing in the distance
    return torch.as_tensor(t, dtype=loc.dtype, device=loc.device).clamp(-1, 1).arccos()

