"""Xero's own example answers, re-expressed as fixtures for the tests (a clone of the project has
no access to the spec file they come from).

Source: XeroAPI/Xero-OpenAPI ``xero_accounting.yaml`` v16.1.0 (the provider notes' "OAS"),
operations ``createItems``, ``createContacts`` and ``createInvoices``, and the ``Error`` /
``Element`` schemas. Only the fields that matter to a client deciding "did Xero accept it?" are
kept; the values are the examples' own.
"""

from __future__ import annotations

import copy
from typing import Any

NIL_GUID = "00000000-0000-0000-0000-000000000000"

# createItems, response 200 example: the element carries ValidationErrors and NO status at all
# (no StatusAttributeString, no HasErrors), a real-looking ItemID, and a Code (abc65591) that is
# not the one the message says was asked for ('abc').
CREATE_ITEMS_200: dict[str, Any] = {
    "Id": "ae7ef7c8-9024-4d42-8d59-5f26ed3f508b",
    "Status": "OK",
    "ProviderName": "Provider Name Example",
    "DateTimeUTC": "/Date(1552331871904)/",
    "Items": [
        {
            "ItemID": "a4544d51-48f6-441f-a623-99ecbced6ab7",
            "Code": "abc65591",
            "Description": "foobar",
            "UpdatedDateUTC": "/Date(1552331871707)/",
            "PurchaseDetails": {},
            "SalesDetails": {},
            "Name": "Hello11350",
            "IsTrackedAsInventory": False,
            "IsSold": True,
            "IsPurchased": True,
            "ValidationErrors": [{"Message": "Price List Item with Code ''abc'' already exists"}],
        }
    ],
}

# createContacts, response 400 example (ValidationException): the refused contact has the nil
# ContactID and HasValidationErrors: true, and no StatusAttributeString.
CREATE_CONTACTS_400: dict[str, Any] = {
    "ErrorNumber": 10,
    "Type": "ValidationException",
    "Message": "A validation exception occurred",
    "Elements": [
        {
            "ContactID": NIL_GUID,
            "AccountNumber": "12345-ABCD",
            "Name": "Buzz Lightyear",
            "EmailAddress": "buzzlightyear@email.com",
            "AccountsReceivableTaxType": "NONE",
            "AccountsPayableTaxType": "INPUT",
            "ContactGroups": [],
            "ContactPersons": [],
            "HasValidationErrors": True,
            "ValidationErrors": [
                {
                    "Message": "The contact name Buzz Lightyear is already assigned to another "
                    "contact. The contact name must be unique across all active contacts."
                }
            ],
        }
    ],
}

# createInvoices, response 200 example: an accepted invoice says so with HasErrors: false and
# StatusAttributeString: OK (the fields a refusal flips).
CREATE_INVOICES_200: dict[str, Any] = {
    "Id": "ccece84a-075c-4fcd-9073-149d4f7a91cf",
    "Status": "OK",
    "ProviderName": "Provider Name Example",
    "DateTimeUTC": "/Date(1552327126164)/",
    "Invoices": [
        {
            "Type": "ACCREC",
            "InvoiceID": "ed255415-e141-4150-aab7-89c3bbbb851c",
            "InvoiceNumber": "INV-0007",
            "Reference": "Website Design",
            "AmountDue": 40.00,
            "AmountPaid": 0.00,
            "HasErrors": False,
            "Contact": {
                "ContactID": "430fa14a-f945-44d3-9f97-5df5e28441b8",
                "Name": "Liam Gallagher",
                "HasValidationErrors": False,
            },
            "Status": "AUTHORISED",
            "LineAmountTypes": "Exclusive",
            "SubTotal": 40.00,
            "TotalTax": 0.00,
            "Total": 40.00,
            "CurrencyCode": "NZD",
            "StatusAttributeString": "OK",
        }
    ],
}


def example(answer: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy a test may change."""
    return copy.deepcopy(answer)
