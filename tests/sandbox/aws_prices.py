"""Prices for the sandbox's moto, which has none: the Pricing API (GetProducts), which moto does not serve at all,
and EC2's spot price history, which moto answers with 0.00001 for every offering, dated 2006, in one page.

Both are seeded from the prices nodesmith embeds (src/catalog/*-prices.tsv), moved a little so that a test can
tell a price read from AWS from the embedded one it replaces:
- GetProducts answers each region's Linux on-demand list price raised by LIST_PRICE_CHANGE, in the documented wire
  shape (aws_v1 price list items as JSON strings, FormatVersion, NextToken pages of MaxResults), honouring the
  TERM_MATCH filters on regionCode, instanceType, tenancy and productFamily (bare metal is filed under dedicated
  tenancy, as in the real price list).
- DescribeSpotPriceHistory answers, per offering of the region (moto's own offerings data), the region's average
  spot price (a fraction of the list price for a type newer than the data) times a factor per zone (ZONE_FACTORS,
  by zone letter), dated now, in pages of MaxResults.

The Pricing request is served through a moto response class, so it is signed, parsed and recorded for the IAM
evaluation (iam_recorder.py) like every other.
"""

import datetime
import json
import os
import pathlib
import zlib

from moto.core.responses import ActionResult, BaseResponse
from moto.ec2.responses.spot_instances import SpotInstances
from moto.moto_server.werkzeug_app import BackendRequest, DomainDispatcherApplication
from werkzeug.wrappers import Response

CATALOG = pathlib.Path(os.environ.get("SANDBOX_CATALOG_DIR", pathlib.Path(__file__).resolve().parents[2] / "src/catalog"))
HOME_REGION = "us-east-1"
# The sandbox's list prices are the embedded ones raised by this much, as if AWS had changed them since.
LIST_PRICE_CHANGE = 1.05
# A zone's spot price is the region's average times its letter's factor.
ZONE_FACTORS = {"a": 0.94, "b": 0.97, "c": 1.0, "d": 1.03, "e": 1.06, "f": 1.09}
# The spot price of a type the embedded averages do not know, as a fraction of its list price.
NEW_TYPE_SPOT_FRACTION = 0.33

_tables: dict = {}


def _table(name):
    """region -> {instance type -> USD per hour} of one embedded price table."""
    if name not in _tables:
        table = {}
        with open(CATALOG / name, encoding="utf-8") as rows:
            for line in rows:
                if line.startswith("#") or line.startswith("region\t"):
                    continue
                region, instance_type, price = line.rstrip("\n").split("\t")[:3]
                table.setdefault(region, {})[instance_type] = float(price)
        _tables[name] = table
    return _tables[name]


def list_prices(region):
    """The region's Linux on-demand list prices, as the sandbox's Pricing API gives them."""
    table = _table("on-demand-prices.tsv") if region == HOME_REGION else _table("regional-on-demand-prices.tsv")
    return {t: round(p * LIST_PRICE_CHANGE, 6) for t, p in table.get(region, {}).items()}


def spot_price(region, instance_type, zone):
    average = _table("regional-spot-prices.tsv").get(region, {}).get(instance_type)
    if average is None:
        # A type newer than the data: a third of its list price, as spot often goes.
        listed = list_prices(region).get(instance_type)
        if listed is None:
            return None
        average = listed * NEW_TYPE_SPOT_FRACTION
    return round(average * ZONE_FACTORS.get(zone[-1], 1.0), 6)


def _page(items, token, max_results):
    start = int(token) if token and str(token).isdigit() else 0
    page = items[start : start + max_results]
    next_token = str(start + max_results) if start + max_results < len(items) else None
    return page, next_token


def _price_list_item(region, instance_type, price, bare_metal):
    sku = f"SANDBOX{zlib.crc32(f'{region}/{instance_type}'.encode()):010d}"
    term = f"{sku}.JRTCKXETXF"
    return json.dumps({
        "product": {
            "productFamily": "Compute Instance (bare metal)" if bare_metal else "Compute Instance",
            "attributes": {
                "instanceType": instance_type, "regionCode": region, "operatingSystem": "Linux",
                "tenancy": "Dedicated" if bare_metal else "Shared", "preInstalledSw": "NA",
                "capacitystatus": "Used", "marketoption": "OnDemand", "servicecode": "AmazonEC2",
            },
            "sku": sku,
        },
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {term: {
            "priceDimensions": {f"{term}.6YS6EN2CT7": {
                "unit": "Hrs", "endRange": "Inf", "beginRange": "0", "rateCode": f"{term}.6YS6EN2CT7",
                "description": f"${price} per On Demand Linux {instance_type} Instance Hour",
                "pricePerUnit": {"USD": f"{price:.10f}"},
            }},
            "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z", "offerTermCode": "JRTCKXETXF", "termAttributes": {},
        }}},
        "version": "20261101000000",
        "publicationDate": "2026-11-01T00:00:00Z",
    })


class PricingResponse(BaseResponse):
    def __init__(self):
        super().__init__(service_name="pricing")

    def get_products(self):
        params = json.loads(self.body or "{}")
        if params.get("ServiceCode") != "AmazonEC2":
            return json.dumps({"FormatVersion": "aws_v1", "PriceList": []})
        terms = {f["Field"].lower(): f["Value"] for f in params.get("Filters", []) if f.get("Type") == "TERM_MATCH"}
        region = terms.get("regioncode")
        items = []
        for region_code in [region] if region else sorted(_table("regional-on-demand-prices.tsv")) + [HOME_REGION]:
            for instance_type, price in sorted(list_prices(region_code).items()):
                bare_metal = instance_type.endswith(".metal") or ".metal-" in instance_type
                attributes = {
                    "instancetype": instance_type,
                    "tenancy": "Dedicated" if bare_metal else "Shared",
                    "productfamily": "Compute Instance (bare metal)" if bare_metal else "Compute Instance",
                    "operatingsystem": "Linux", "preinstalledsw": "NA", "capacitystatus": "Used",
                    "marketoption": "OnDemand", "servicecode": "AmazonEC2", "regioncode": region_code,
                }
                if all(attributes.get(field, value) == value for field, value in terms.items()):
                    items.append(_price_list_item(region_code, instance_type, price, bare_metal))
        page, next_token = _page(items, params.get("NextToken"), int(params.get("MaxResults") or 100))
        answer = {"FormatVersion": "aws_v1", "PriceList": page}
        if next_token:
            answer["NextToken"] = next_token
        return json.dumps(answer)


def _signing_service(environ):
    auth = environ.get("HTTP_AUTHORIZATION") or ""
    try:
        return auth.split(",")[0].split()[1].split("/")[3]
    except IndexError:
        return None


def serve_the_pricing_api():
    original = DomainDispatcherApplication.__call__

    def call(self, environ, start_response):
        if _signing_service(environ) != "pricing":
            return original(self, environ, start_response)
        request = BackendRequest(environ)
        status, headers, body = PricingResponse.dispatch(request, request.url, dict(request.headers))
        headers = {k: str(v) for k, v in headers.items() if k.lower() != "status"}
        headers.setdefault("Content-Type", "application/x-amz-json-1.1")
        return Response(body, status=status, headers=headers)(environ, start_response)

    DomainDispatcherApplication.__call__ = call


def seed_the_spot_price_history():
    def describe_spot_price_history(self):
        instance_types = self._get_param("InstanceTypes", [])
        offerings = self.ec2_backend.describe_spot_price_history(instance_types, self._filters_from_querystring())
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        history = []
        for offering in offerings:
            price = spot_price(self.region, offering["InstanceType"], offering["Location"])
            if price is not None:
                history.append({
                    "InstanceType": offering["InstanceType"],
                    "ProductDescription": "Linux/UNIX",
                    "SpotPrice": f"{price:.6f}",
                    "AvailabilityZone": offering["Location"],
                    "Timestamp": now,
                })
        page, next_token = _page(history, self._get_param("NextToken"), self._get_int_param("MaxResults", 1000))
        result = {"SpotPriceHistory": page}
        if next_token:
            result["NextToken"] = next_token
        return ActionResult(result)

    SpotInstances.describe_spot_price_history = describe_spot_price_history


def install():
    serve_the_pricing_api()
    seed_the_spot_price_history()
